// The bundle as creps.runtime.bundle reads it: manifest.json validated with the same checks and the same
// messages, every listed file's sha256 verified before use, the stage contract taken from the manifest.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>

#include "backend.hpp"
#include "pyformat.hpp"

namespace creps::detail {

struct TensorSpec {
    std::string name;
    std::vector<ojson> axes;  // a model field name, an int, or a dynamic axis: batch, height, width
};

struct StageSpec {
    std::vector<TensorSpec> inputs, outputs;  // in call order
    const TensorSpec& input(const std::string& name) const;
};

extern const char* const DYNAMIC[3];  // "batch", "height", "width"
bool is_dynamic(const ojson& axis);

// The stage contract of format version 1 (creps.runtime.stages.to_manifest(), checked equal by a test);
// version 2 records it, and a recorded one must equal it.
const ojson& builtin_stages();
// Where a recorded "stages" section first differs from the built-in one (nullopt: it does not), as
// creps.runtime.stages.difference words it.
std::optional<std::string> stages_difference(const ojson& recorded);

class Bundle {
public:
    std::string path;                  // the folder as Python prints it (str(Path(dir)))
    std::filesystem::path dir;
    ojson manifest;                    // key order as in the file
    nlohmann::json plain;              // the same, for the backends (BundleRef)
    std::map<std::string, StageSpec> stages;

    std::int64_t model(const std::string& field) const { return manifest["model"][field].get<std::int64_t>(); }
    std::string display(const std::string& file) const;  // str(bundle.path / file)
    BundleRef ref() const { return {dir, &plain}; }
    // The shape of each output of `stage` for a call with `inputs` (axes resolved as the contract says).
    std::vector<std::vector<std::int64_t>> output_shapes(const std::string& stage,
                                                         const std::vector<TensorView>& inputs) const;
};

Bundle read_bundle(const std::string& dir, bool verify_hashes = true);
Bundle bundle_from(const BundleRef& ref);  // a read bundle again, as a backend gets it
std::string sha256_file(const std::filesystem::path& file);  // lowercase hex; BundleError if unreadable
// Refuse a graph file whose IO shapes, as the backend's library reads them ({name: shape}, a dynamic axis a
// name or null; a missing name: no such tensor), differ from what its manifest entry records.
void check_graph_file(const Bundle& bundle, const std::string& key, const std::map<std::string, ojson>& shapes);
[[noreturn]] void fail(const std::string& path, const std::string& message);  // BundleError "path: message"

}  // namespace creps::detail
