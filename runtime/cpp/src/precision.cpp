#include "precision.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <vector>

#include <sys/utsname.h>

namespace creps::detail {
namespace {

const char* const PRECISIONS[] = {"fp32", "fp16", "int8"};
const char* const REDUCED_STAGES[] = {"lines", "pixels"};  // the stages creps-calib makes fp16 / int8 graphs of

// The precisions faster than fp32 on each backend, fastest first (runtime/precision.py FASTER says why).
std::vector<std::string> faster(const std::string& backend) {
    return backend == "ort-cpu" ? std::vector<std::string>{} : std::vector<std::string>{"fp16"};
}

// Those `auto` takes only where the bundle records them faster on this kind of CPU (MEASURED).
std::vector<std::string> measured(const std::string& backend) {
    return backend == "ort-cpu" ? std::vector<std::string>{"int8"} : std::vector<std::string>{};
}

bool is_precision(const std::string& p) { return p == "fp32" || p == "fp16" || p == "int8"; }

std::string calib_command(const std::string& path, const std::string& precision) {
    return "creps-calib --bundle " + path + (precision == "int8" ? " --int8" : "");
}

std::string trimmed(const std::string& text) {
    const char* space = " \t\r\n\f\v";
    size_t first = text.find_first_not_of(space);
    return first == std::string::npos ? "" : text.substr(first, text.find_last_not_of(space) - first + 1);
}

// creps.runtime.cpu.cpu: the first CPU's model name and feature flags, from /proc/cpuinfo.
struct Cpu {
    std::string model;
    std::set<std::string> flags;
};

Cpu this_cpu() {
    std::map<std::string, std::string> fields;  // each key's first value: the first CPU's
    std::ifstream cpuinfo("/proc/cpuinfo");
    for (std::string line; std::getline(cpuinfo, line);) {
        size_t colon = line.find(':');
        fields.emplace(trimmed(line.substr(0, colon)), colon == std::string::npos ? "" : trimmed(line.substr(colon + 1)));
    }
    auto field = [&fields](const char* key) { return fields.count(key) ? fields[key] : std::string(); };
    std::string arm;
    for (const char* key : {"CPU implementer", "CPU part"})
        if (fields.count(key)) arm += (arm.empty() ? "" : " ") + std::string(key) + " " + fields[key];
    Cpu cpu;
    utsname name{};
    cpu.model = !field("model name").empty() ? field("model name") : !arm.empty() ? arm
                : uname(&name) == 0 ? name.machine : "";
    std::istringstream flags(!field("flags").empty() ? field("flags") : field("Features"));
    for (std::string flag; flags >> flag;) cpu.flags.insert(flag);
    return cpu;
}

// creps.runtime.cpu.saturates_8bit_weights: an x86 CPU with no VNNI flag.
bool saturates_8bit_weights() {
#if defined(__x86_64__) || defined(__i386__)
    std::set<std::string> flags = this_cpu().flags;
    for (const char* exact : {"avx512_vnni", "avx_vnni", "amx_int8"})
        if (flags.count(exact)) return false;
    return true;
#else
    return false;
#endif
}

// creps.runtime.cpu.int8_kernel_class: this CPU's model name and the flags ONNX Runtime's integer kernels go by.
ojson int8_kernel_class() {
    Cpu cpu = this_cpu();
    ojson flags = ojson::array();
    for (const std::string& flag : cpu.flags)  // a std::set is sorted, as Python's sorted()
        if (flag == "avx2" || flag == "avx512bw" || flag == "avx512_vnni" || flag == "avx_vnni" ||
            flag == "amx_int8" || flag == "asimddp" || flag == "i8mm")
            flags.push_back(flag);
    return {{"cpu", cpu.model}, {"int8_flags", flags}};
}

// creps.runtime.precision.int8_weight_bits: the int8 graphs' weight width (7 where none is recorded).
int int8_weight_bits(const Bundle& bundle) {
    int widest = 7;
    for (const char* stage : REDUCED_STAGES) {
        const ojson& entry = bundle.manifest["graphs"][graph_key(stage, "int8")];
        ojson bits = entry.contains("weight_bits") ? entry["weight_bits"] : ojson(7);
        if (!bits.is_number_integer() || (bits.get<int>() != 7 && bits.get<int>() != 8))
            throw BundleError(bundle.path + ": int8 weight_bits " + py_repr(bits) +
                              " in the manifest, not 7 or 8; re-run: " + calib_command(bundle.path, "int8"));
        widest = std::max(widest, bits.get<int>());
    }
    return widest;
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

// creps.runtime.precision.saturated: ONNX Runtime's CPU kernels saturate the bundle's int8 weights here.
bool saturated(const Bundle& bundle, const std::string& backend) {
    return backend == "ort-cpu" && int8_weight_bits(bundle) > 7 && saturates_8bit_weights();
}

// creps.runtime.precision.unmeasured: whether the bundle records `precision` faster than fp32 on a CPU like this.
bool measured_faster_here(const Bundle& bundle, const std::string& precision) {
    const ojson here = int8_kernel_class();
    bool timed = false;
    for (const char* stage : REDUCED_STAGES) {
        const ojson& entry = bundle.manifest["graphs"][graph_key(stage, precision)];
        if (!entry.contains("cpu_speedup") || entry["cpu_speedup"].is_null()) continue;  // a stage kept in float
        const ojson& record = entry["cpu_speedup"];
        if (!record.is_object() || !record.contains("speedup") || !number(record["speedup"])) return false;
        if (record.value("cpu", ojson()) != here["cpu"] || record.value("int8_flags", ojson()) != here["int8_flags"])
            return false;
        if (record["speedup"].get<double>() <= 1) return false;
        timed = true;
    }
    return timed;
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
        for (const std::string& p : measured(backend))
            if (has(p) && !shortfall(bundle, p) && measured_faster_here(bundle, p) &&
                !(p == "int8" && saturated(bundle, backend)))
                return p;
        return "fp32";
    }
    if (!is_precision(requested))
        throw BundleError("unknown precision " + py_str_repr(requested) + " (choose from fp32, fp16, int8, auto)");
    if (!has(requested))
        throw BundleError(bundle.path + " has no " + requested + " graphs (it has: " + joined(have) +
                          "); make them with: " + calib_command(bundle.path, requested));
    if (requested == "int8" && saturated(bundle, backend))
        throw BundleError(bundle.path + ": its int8 graphs have 8-bit weights, which ONNX Runtime's integer kernels "
                          "saturate on this CPU (x86 without VNNI); make 7-bit ones with: " +
                          calib_command(bundle.path, "int8") + " --weight-bits 7");
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
