#include "precision.hpp"

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

namespace creps::detail {
namespace {

const char* const PRECISIONS[] = {"fp32", "fp16", "int8"};
const char* const REDUCED_STAGES[] = {"lines", "pixels"};  // the stages creps-calib makes fp16 / int8 graphs of

// The precisions faster than fp32 on each backend, fastest first (runtime/precision.py says why).
std::vector<std::string> faster(const std::string& backend) {
    return backend == "ort-cpu" ? std::vector<std::string>{} : std::vector<std::string>{"fp16"};
}

bool is_precision(const std::string& p) { return p == "fp32" || p == "fp16" || p == "int8"; }

std::string calib_command(const std::string& path, const std::string& precision) {
    return "creps-calib --bundle " + path + (precision == "int8" ? " --int8" : "");
}

std::vector<std::string> present(const Bundle& bundle) {
    const ojson& graphs = bundle.manifest["graphs"];
    std::vector<std::string> have;
    for (const char* p : PRECISIONS) {
        bool all = true;
        for (const char* stage : {"mapping", "lines", "pixels"})
            all = all && graphs.contains(graph_key(stage, stage_precision(stage, p)));
        if (all) have.push_back(p);
    }
    return have;
}

std::string joined(const std::vector<std::string>& items) {
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + items[i];
    return out;
}

bool number(const ojson& v) { return v.is_number(); }  // isinstance(v, (int, float)); a JSON bool is not

// Why `precision`'s recorded error does not meet its recorded bar (nullopt: it does).
std::optional<std::string> shortfall(const Bundle& bundle, const std::string& precision) {
    if (precision == "fp32") return std::nullopt;
    const ojson& m = bundle.manifest;
    auto object = [](const ojson& parent, const char* key) -> ojson {
        return parent.is_object() && parent.contains(key) && !parent[key].is_null() && parent[key] != false &&
                       !(parent[key].is_object() && parent[key].empty())
                   ? parent[key] : ojson::object();
    };
    ojson bars = object(object(object(m, "verification"), "precision"), "bars");
    if (!bars.is_object() || !bars.contains(precision) || !bars[precision].is_object() || bars[precision].empty())
        return "no " + precision + " bar recorded";
    const ojson& bar = bars[precision];
    for (const char* stage : REDUCED_STAGES) {
        const ojson& entry = m["graphs"][graph_key(stage, precision)];
        ojson error = object(entry, "measured_error");
        if (error.empty()) error = entry.contains("predicted_error") ? entry["predicted_error"] : ojson();
        if (!error.is_object()) return std::string("no error recorded for the ") + stage + " graph";
        for (const auto& [key, limit] : bar.items()) {  // psnr_db keys: lower bounds; max_abs keys: upper bounds
            if (!error.contains(key)) return "no " + key + " recorded for the " + stage + " graph";
            const ojson value = error[key];
            auto ends = [&key](const std::string& tail) {
                return key.size() >= tail.size() && key.compare(key.size() - tail.size(), tail.size(), tail) == 0;
            };
            const bool both = number(value) && number(limit);
            if (ends("psnr_db")) {
                if (!value.is_null() && !(both && value.get<double>() >= limit.get<double>()))
                    return std::string(stage) + " " + key + " " + py_repr(value) + " < " + py_repr(limit);
            } else if (ends("max_abs")) {
                if (!(both && value.get<double>() <= limit.get<double>()))
                    return std::string(stage) + " " + key + " " + py_repr(value) + " > " + py_repr(limit);
            } else {
                return "a " + precision + " bar on " + py_str_repr(key) + ", which this creps does not know";
            }
        }
    }
    return std::nullopt;
}

}  // namespace

std::string stage_precision(const std::string& stage, const std::string& precision) {
    return stage == "lines" || stage == "pixels" ? precision : "fp32";
}

std::string graph_key(const std::string& stage, const std::string& precision) {
    return precision == "fp32" ? stage : stage + "." + precision;
}

std::string choose_precision(const Bundle& bundle, const std::string& backend, const std::string& requested) {
    std::vector<std::string> have = present(bundle);
    auto has = [&](const std::string& p) { return std::find(have.begin(), have.end(), p) != have.end(); };
    if (requested == "auto") {
        for (const std::string& p : faster(backend))
            if (has(p) && !shortfall(bundle, p)) return p;
        return "fp32";
    }
    if (!is_precision(requested))
        throw BundleError("unknown precision " + py_str_repr(requested) + " (choose from fp32, fp16, int8, auto)");
    if (!has(requested))
        throw BundleError(bundle.path + " has no " + requested + " graphs (it has: " + joined(have) +
                          "); make them with: " + calib_command(bundle.path, requested));
    return requested;
}

std::string engines_precision(const Bundle& bundle) {
    std::set<std::string> built;  // sorted, as Python's sorted({...})
    const ojson& engines = bundle.manifest.contains("engines") ? bundle.manifest["engines"] : ojson::object();
    for (const char* stage : REDUCED_STAGES)
        if (engines.contains(stage)) {
            ojson p = engines[stage].value("precision", ojson());
            if (p.is_string()) built.insert(p.get<std::string>());
        }
    std::vector<std::string> list(built.begin(), built.end());
    if (list.size() != 1 || !is_precision(list[0])) {
        ojson shown = ojson::array();
        for (const auto& p : list) shown.push_back(p);
        throw BundleError(bundle.path + ": the lines and pixels engines are built in " +
                          (list.empty() ? "nothing" : py_repr(shown)) +
                          ", not one precision; rebuild them: creps-export --out " + bundle.path + " --trt");
    }
    return list[0];
}

std::optional<std::string> engine_mismatch(const Bundle& bundle, const std::string& requested) {
    std::string built = engines_precision(bundle);
    if (requested == "auto" || requested == built) return std::nullopt;
    std::string flag = requested == "fp32" ? "" : " --" + requested;
    return "the bundle's engines are " + built + ", not " + requested + "; build " + requested +
           " engines with: creps-export --out " + bundle.path + flag + " --trt";
}

}  // namespace creps::detail
