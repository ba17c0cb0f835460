#include "bundle.hpp"
#include "precision.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include <openssl/evp.h>

namespace creps::detail {
namespace fs = std::filesystem;

const char* const DYNAMIC[3] = {"batch", "height", "width"};

namespace {

const char* const FORMAT = "creps-bundle";
const std::int64_t READS[] = {1, 2};  // 1: no "stages" section, the built-in contract applies
const char* const MANIFEST = "manifest.json";
const char* const STAGES[] = {"mapping", "lines", "pixels", "generator"};
const char* const PRECISIONS[] = {"fp32", "fp16", "int8"};
const char* const MODEL_FIELDS[] = {"z_dim", "w_dim", "num_ws", "num_blocks", "blocks", "rank",
                                    "biline_channels", "img_resolution", "img_channels", "mapping_layers",
                                    "channel_base", "channel_max", "truncation_cutoff"};
const std::int64_t MAX_SIZE = 2147483647;  // the largest size a manifest may state (an int32)
const char* const IO_DTYPE = "float32";
const int MAX_DEPTH = 900;
const char* const EDITED = "restore manifest.json or re-export the bundle";

void require(bool ok, const std::string& path, const std::string& message) {
    if (!ok) fail(path, message);
}

template <class T, size_t N, class V>
bool contains(const T (&list)[N], const V& value) {
    return std::find(std::begin(list), std::end(list), value) != std::end(list);
}

bool is_int(const ojson& v) { return v.is_number_integer(); }  // a JSON int; never true or 1.0

std::int64_t as_int(const ojson& v) {
    return v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)
               ? INT64_MAX : v.get<std::int64_t>();
}

bool is_size(const ojson& v, std::int64_t least = 1) {
    return is_int(v) && as_int(v) >= least && as_int(v) <= MAX_SIZE;
}

std::string repr_head(const ojson& v, size_t chars) { return head(py_repr(v), chars); }
std::string dumps_head(const ojson& v, size_t chars) { return head(py_dumps(v), chars); }
std::string get_repr(const ojson& object, const std::string& key) {  // repr(dict.get(key))
    return object.contains(key) ? py_repr(object[key]) : "None";
}
ojson get(const ojson& object, const std::string& key) { return object.contains(key) ? object[key] : ojson(); }

std::string axes_text(const std::vector<ojson>& axes) {  // ', '.join(map(str, axes))
    std::string out;
    for (size_t i = 0; i < axes.size(); ++i)
        out += (i ? ", " : "") + (axes[i].is_string() ? axes[i].get<std::string>() : py_repr(axes[i]));
    return out;
}

std::string shape_text(const ojson& shape) { return shape.is_array() ? dumps_head(shape, 80) : repr_head(shape, 80); }

void validate_model(const ojson& model, const std::string& path) {
    require(model.is_object(), path, "manifest has no model section");
    std::vector<std::string> unknown;
    for (auto& [key, value] : model.items())
        if (!contains(MODEL_FIELDS, key)) unknown.push_back(key);
    std::sort(unknown.begin(), unknown.end());
    std::string joined;
    for (size_t i = 0; i < unknown.size(); ++i) joined += (i ? ", " : "") + unknown[i];
    require(unknown.empty(), path,
            "manifest model section has unknown field " + joined + " (a bundle from a newer creps?)");
    std::string missing;
    for (const char* field : MODEL_FIELDS)
        if (!model.contains(field)) missing += (missing.empty() ? "" : ", ") + std::string(field);
    require(missing.empty(), path, "manifest model section lacks " + missing);
    for (const char* name : MODEL_FIELDS) {
        std::string field = name;
        const ojson& value = model[field];
        bool ok;
        std::string want;
        if (field == "blocks") {
            ok = value.is_array() && !value.empty() &&
                 std::all_of(value.begin(), value.end(), [](const ojson& b) { return is_size(b); });
            want = "a list of sizes";
        } else if (field == "truncation_cutoff") {
            ok = value.is_null() || is_size(value, 0);
            want = "null or a count";
        } else {
            ok = is_size(value);
            want = "an integer in 1.." + std::to_string(MAX_SIZE);
        }
        require(ok, path, "manifest model " + field + " = " + dumps_head(value, 40) + " must be " + want);
    }
}

void validate_relations(const ojson& model, const std::string& path) {
    const ojson& blocks = model["blocks"];
    std::int64_t res = as_int(model["img_resolution"]), num_blocks = as_int(model["num_blocks"]);
    require(static_cast<std::int64_t>(blocks.size()) == num_blocks, path,
            "manifest model blocks " + py_repr(blocks) + " has " + std::to_string(blocks.size()) +
                " entries, num_blocks is " + std::to_string(num_blocks) + "; " + EDITED);
    int bit_length = 0;
    for (std::int64_t r = res; r; r >>= 1) ++bit_length;
    require((res & (res - 1)) == 0 && bit_length == num_blocks + 3, path,
            "manifest model img_resolution = " + std::to_string(res) + " contradicts num_blocks = " +
                std::to_string(num_blocks) + " (B = log2(img_resolution) - 2 blocks); " + EDITED);
    bool doubling = true;
    for (size_t i = 0; i < blocks.size(); ++i) doubling = doubling && as_int(blocks[i]) == (std::int64_t{8} << i);
    require(doubling, path, "manifest model blocks " + py_repr(blocks) + " are not 8, 16, ..., img_resolution " +
                                std::to_string(res) + "; " + EDITED);
    const ojson& cutoff = model["truncation_cutoff"];
    require(cutoff.is_null() || as_int(cutoff) <= as_int(model["num_ws"]), path,
            "manifest model truncation_cutoff = " + py_repr(cutoff) + " exceeds num_ws = " +
                std::to_string(as_int(model["num_ws"])) + "; " + EDITED);
}

StageSpec stage_spec(const ojson& stage) {
    StageSpec spec;
    for (auto [side, list] : {std::pair{"inputs", &spec.inputs}, std::pair{"outputs", &spec.outputs}})
        for (const ojson& tensor : stage[side])
            list->push_back({tensor["name"].get<std::string>(), tensor["axes"].get<std::vector<ojson>>()});
    return spec;
}

void validate_signature(const std::string& key, const ojson& entry, const ojson& model, const StageSpec& contract,
                        const std::string& path) {
    std::string stage = entry["stage"].get<std::string>();
    for (auto [side, specs] : {std::pair{"inputs", &contract.inputs}, std::pair{"outputs", &contract.outputs}}) {
        ojson tensors = get(entry, side);
        bool listed = tensors.is_array() &&
                      std::all_of(tensors.begin(), tensors.end(), [](auto& t) { return t.is_object(); });
        require(listed, path, "graph " + key + ": " + side + " is not a list of tensors");
        ojson got = ojson::array();
        bool named = true;
        for (const ojson& t : tensors) {
            got.push_back(get(t, "name"));
            named = named && got.back().is_string();
        }
        std::set<std::string> got_set, want_set;
        std::string names;
        for (const TensorSpec& t : *specs) {
            want_set.insert(t.name);
            names += (names.empty() ? "" : ", ") + t.name;
        }
        if (named)
            for (const ojson& n : got) got_set.insert(n.get<std::string>());
        require(named && got.size() == specs->size() && got_set == want_set, path,
                "graph " + key + ": " + side + " " + dumps_head(got, 80) + ", the " + stage + " stage has " + names);
        for (const ojson& tensor : tensors) {
            std::string name = tensor["name"].get<std::string>();
            const std::vector<ojson>& axes =
                std::find_if(specs->begin(), specs->end(), [&](auto& t) { return t.name == name; })->axes;
            ojson shape = get(tensor, "shape");
            require(tensor.contains("dtype") && tensor["dtype"] == IO_DTYPE, path,
                    "graph " + key + ": " + name + " has dtype " + get_repr(tensor, "dtype") + ", the runtime feeds " +
                        IO_DTYPE);
            require(shape.is_array() && shape.size() == axes.size(), path,
                    "graph " + key + ": " + name + " has shape " + shape_text(shape) +
                        ", the stage contract has rank " + std::to_string(axes.size()) + " [" + axes_text(axes) + "]");
            for (size_t axis = 0; axis < axes.size(); ++axis) {
                const ojson& size = shape[axis];
                const ojson& meaning = axes[axis];
                if (is_dynamic(meaning)) {
                    require(size.is_string() && !size.get<std::string>().empty(), path,
                            "graph " + key + ": " + name + " axis " + std::to_string(axis) + " (" +
                                meaning.get<std::string>() + ") is fixed at " + py_repr(size) +
                                "; the runtime needs it dynamic; re-export the bundle");
                } else if (meaning.is_number_integer()) {
                    require(is_int(size) && as_int(size) == as_int(meaning), path,
                            "graph " + key + ": " + name + " has shape " + shape_text(shape) +
                                ", the stage contract says " + py_repr(ojson(axes)));
                } else {
                    const ojson& value = model[meaning.get<std::string>()];
                    require(is_int(size) && as_int(size) == as_int(value), path,
                            "manifest model " + meaning.get<std::string>() + " = " + py_repr(value) +
                                " contradicts graph " + key + ": its " + name + " has shape " + shape_text(shape) +
                                " [" + axes_text(axes) + "]; " + EDITED);
                }
            }
        }
    }
}

bool plain_name(const std::string& file) {
    return !file.empty() && file.find('/') == std::string::npos && file.find('\\') == std::string::npos &&
           file.find('\0') == std::string::npos && file[0] != '.';
}

void validate_manifest(const ojson& manifest, const std::string& path) {
    require(manifest.is_object(), path, "manifest is not a JSON object");
    require(manifest.contains("format") && manifest["format"] == FORMAT, path,
            "not a creps bundle (format " + head(get_repr(manifest, "format"), 40) + ")");
    ojson version = get(manifest, "format_version");
    bool readable = is_int(version) && contains(READS, as_int(version));
    require(readable, path,
            "bundle format version " + head(py_repr(version), 40) +
                ", this creps reads versions 1 and 2; re-export the bundle with this creps (creps-export) or "
                "install the creps that wrote it");
    if (as_int(version) >= 2 || manifest.contains("stages")) {
        auto found = stages_difference(get(manifest, "stages"));
        require(!found, path, "manifest stages contradict this creps's stage contract: " + found.value_or("") +
                                  "; re-export the bundle");
    }
    ojson model = get(manifest, "model");
    validate_model(model, path);
    ojson graphs = get(manifest, "graphs");
    require(graphs.is_object() && !graphs.empty(), path, "manifest lists no graphs");
    ojson engines = manifest.contains("engines") ? manifest["engines"] : ojson::object();
    require(engines.is_object(), path, "manifest engines is not an object");
    for (const ojson* section : {&graphs, &engines}) {
        for (auto& [key, entry] : section->items()) {
            require(entry.is_object(), path, "entry " + key + " is not an object");
            for (const char* field : {"file", "sha256", "precision"})
                require(entry.contains(field) && entry[field].is_string(), path,
                        "entry " + key + " lacks " + field);
            require(contains(PRECISIONS, entry["precision"].get<std::string>()), path,
                    "entry " + key + ": unknown precision " + repr_head(entry["precision"], 40));
            require(plain_name(entry["file"].get<std::string>()), path,
                    "entry " + key + ": file " + repr_head(entry["file"], 80) +
                        " must be a plain name inside the bundle");
        }
    }
    const ojson& contract = builtin_stages();  // equal to a recorded one, checked above
    for (auto& [key, entry] : graphs.items()) {
        ojson stage = get(entry, "stage");
        require(stage.is_string() && contains(STAGES, stage.get<std::string>()), path,
                "graph " + key + ": unknown stage " + head(py_repr(stage), 40));
        require(key == graph_key(stage.get<std::string>(), entry["precision"].get<std::string>()), path,
                "graph " + key + ": key does not match");
        validate_signature(key, entry, model, stage_spec(contract[stage.get<std::string>()]), path);
    }
    validate_relations(model, path);
}

std::string join(const std::string& folder, const std::string& name) {  // str(Path(folder) / name)
    return folder == "." ? name : folder.back() == '/' ? folder + name : folder + "/" + name;
}

std::string os_error(int error, const std::string& file) {  // str(OSError) as Python words it
    return "[Errno " + std::to_string(error) + "] " + std::strerror(error) + ": " + py_str_repr(file);
}

void verify_file(const Bundle& bundle, const std::string& key, const ojson& entry) {
    std::string file = entry["file"].get<std::string>();
    std::error_code ec;
    require(fs::is_regular_file(bundle.dir / file, ec), bundle.path,
            file + " (" + key + ") is missing; re-export the bundle");
    require(sha256_file(bundle.dir / file) == entry["sha256"].get<std::string>(), bundle.path,
            file + " (" + key + ") does not match its sha256 in the manifest (corrupt or altered); "
                   "re-export the bundle");
}

std::optional<std::string> difference(const ojson& recorded, const ojson& want, const std::string& where) {
    auto text = [](const ojson& v) { return dumps_head(v, 80); };
    if (want.is_object()) {
        if (!recorded.is_object()) return where + " is " + text(recorded) + ", not an object";
        std::vector<std::string> keys;
        for (auto& [key, value] : want.items()) keys.push_back(key);
        for (auto& [key, value] : recorded.items()) keys.push_back(key);
        for (const std::string& key : keys) {
            if (!recorded.contains(key) || !want.contains(key))
                return where + " " + (want.contains(key) ? "lacks" : "has an unknown") + " " + text(ojson(key));
            if (auto found = difference(recorded[key], want[key], where + "." + key)) return found;
        }
        return std::nullopt;
    }
    if (want.is_array()) {
        if (!recorded.is_array()) return where + " is " + text(recorded) + ", not a list";
        if (recorded.size() != want.size())
            return where + " has " + std::to_string(recorded.size()) + " entries, this creps has " +
                   std::to_string(want.size());
        for (size_t i = 0; i < want.size(); ++i)
            if (auto found = difference(recorded[i], want[i], where + "[" + std::to_string(i) + "]")) return found;
        return std::nullopt;
    }
    bool same_type = want.is_string() ? recorded.is_string() : is_int(recorded);  // leaves: names and ints
    if (!same_type || recorded != want) return where + " is " + text(recorded) + ", this creps has " + text(want);
    return std::nullopt;
}

void read_stages(Bundle& bundle) {  // the recorded contract (format 2), else the built-in one (format 1)
    const ojson& stages = bundle.manifest.contains("stages") ? bundle.manifest["stages"] : builtin_stages();
    for (auto& [name, stage] : stages.items()) bundle.stages[name] = stage_spec(stage);
}

}  // namespace

Bundle bundle_from(const BundleRef& ref) {
    Bundle bundle;
    bundle.path = py_path(ref.dir.string());
    bundle.dir = ref.dir;
    bundle.plain = *ref.manifest;
    bundle.manifest = ojson::parse(ref.manifest->dump());  // keys sorted; the lists keep their order
    read_stages(bundle);
    return bundle;
}

bool is_dynamic(const ojson& axis) {
    return axis.is_string() && contains(DYNAMIC, axis.get<std::string>());
}

std::optional<std::string> stages_difference(const ojson& recorded) {
    return difference(recorded, builtin_stages(), "stages");
}

void fail(const std::string& path, const std::string& message) { throw BundleError(path + ": " + message); }

const TensorSpec& StageSpec::input(const std::string& name) const {
    return *std::find_if(inputs.begin(), inputs.end(), [&](auto& t) { return t.name == name; });
}

std::string sha256_file(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw BundleError(os_error(errno, file.string()));
    std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    if (!ctx || !EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr)) throw Error("OpenSSL cannot compute sha256");
    std::vector<char> block(1 << 20);
    while (in) {
        in.read(block.data(), static_cast<std::streamsize>(block.size()));
        if (in.gcount() > 0) EVP_DigestUpdate(ctx.get(), block.data(), static_cast<size_t>(in.gcount()));
    }
    if (in.bad()) throw BundleError(os_error(EIO, file.string()));
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_DigestFinal_ex(ctx.get(), digest, &length);
    static const char* hexdigits = "0123456789abcdef";
    std::string out;
    for (unsigned i = 0; i < length; ++i) {
        out += hexdigits[digest[i] >> 4];
        out += hexdigits[digest[i] & 15];
    }
    return out;
}

Bundle read_bundle(const std::string& dir, bool verify_hashes) {
    Bundle bundle;
    bundle.path = py_path(dir);
    bundle.dir = fs::path(dir);
    std::error_code ec;
    require(fs::is_directory(bundle.dir, ec), bundle.path, "no such bundle folder");
    fs::path manifest_file = bundle.dir / MANIFEST;
    require(fs::is_regular_file(manifest_file, ec), bundle.path,
            std::string("no ") + MANIFEST + " (not a bundle, or an export that did not finish)");
    std::string manifest_name = join(bundle.path, MANIFEST);
    std::ifstream in(manifest_file, std::ios::binary);
    if (!in) throw BundleError(manifest_name + ": unreadable manifest (" + os_error(errno, manifest_name) + ")");
    std::stringstream text;
    text << in.rdbuf();
    try {
        // Python's decoder gives up near 1000 levels of nesting; no manifest comes near that
        bundle.manifest = ojson::parse(text.str(), [](int depth, ojson::parse_event_t, ojson&) {
            if (depth > MAX_DEPTH) throw std::runtime_error("maximum recursion depth exceeded while decoding JSON");
            return true;
        });
        bundle.plain = nlohmann::json::parse(text.str());
    } catch (const std::exception& exc) {  // nlohmann's parse errors, or the depth above
        throw BundleError(manifest_name + ": unreadable manifest (" + exc.what() + ")");
    }
    validate_manifest(bundle.manifest, bundle.path);
    read_stages(bundle);
    if (verify_hashes) {
        // {**graphs, **engines}: an engine's entry replaces a graph's of the same key, in the graph's place
        ojson files = bundle.manifest["graphs"];
        if (bundle.manifest.contains("engines"))
            for (auto& [key, entry] : bundle.manifest["engines"].items()) files[key] = entry;
        for (auto& [key, entry] : files.items()) verify_file(bundle, key, entry);
    }
    return bundle;
}

std::string Bundle::display(const std::string& file) const { return join(path, file); }

std::vector<std::vector<std::int64_t>> Bundle::output_shapes(const std::string& stage,
                                                             const std::vector<TensorView>& inputs) const {
    const StageSpec& spec = stages.at(stage);
    std::map<std::string, std::int64_t> sizes;  // each dynamic axis from the inputs that carry it
    for (size_t i = 0; i < spec.inputs.size() && i < inputs.size(); ++i)
        for (size_t a = 0; a < spec.inputs[i].axes.size() && a < inputs[i].shape.size(); ++a)
            if (is_dynamic(spec.inputs[i].axes[a]))
                sizes.emplace(spec.inputs[i].axes[a].get<std::string>(), inputs[i].shape[a]);
    std::vector<std::vector<std::int64_t>> shapes;
    for (const TensorSpec& out : spec.outputs) {
        std::vector<std::int64_t> shape;
        for (const ojson& axis : out.axes)
            shape.push_back(axis.is_number_integer() ? axis.get<std::int64_t>()
                            : is_dynamic(axis)       ? sizes.at(axis.get<std::string>())
                                                     : model(axis.get<std::string>()));
        shapes.push_back(shape);
    }
    return shapes;
}

void check_graph_file(const Bundle& bundle, const std::string& key, const std::map<std::string, ojson>& shapes) {
    const ojson& entry = bundle.manifest["graphs"][key];
    for (const char* side : {"inputs", "outputs"}) {
        for (const ojson& tensor : entry[side]) {
            const ojson& recorded = tensor["shape"];
            auto found = shapes.find(tensor["name"].get<std::string>());
            bool ok = found != shapes.end() && found->second.size() == recorded.size();
            for (size_t i = 0; ok && i < recorded.size(); ++i) {
                const ojson& have = found->second[i];
                bool fixed = have.is_number_integer() && have.get<std::int64_t>() >= 0;
                ok = recorded[i].is_number_integer() ? have == recorded[i] : !fixed;
            }
            require(ok, bundle.path,
                    entry["file"].get<std::string>() + ": " + tensor["name"].get<std::string>() + " has shape " +
                        (found == shapes.end() ? "None" : py_repr(found->second)) + ", the manifest records " +
                        py_repr(recorded) + "; " + EDITED);
        }
    }
}

}  // namespace creps::detail
