// creps C++ runtime: generate images from an exported creps bundle, with the same results, bit for bit,
// as the Python runtime (creps.runtime) on the same backend.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace creps {

// Every failure is a creps::Error with one line of text, the same text the Python runtime gives.
class Error : public std::runtime_error { public: using std::runtime_error::runtime_error; };
// The kinds of failure, as the Python runtime's (creps.errors): a bad or altered bundle; a backend that cannot
// run here (library, provider, GPU or engine missing); a graph that gave NaN or Inf.
class BundleError : public Error { public: using Error::Error; };
class BackendUnavailable : public Error { public: using Error::Error; };
class NonFiniteError : public Error { public: using Error::Error; };

struct Size { int width = 0, height = 0; };                 // 0x0: the model's training resolution
struct Window { double x0, y0, x1, y1; };                   // the plane's part to show (default: the fit's)
struct TileSize { int width, height; };

struct Options {
    std::string backend = "auto";                          // auto | ort-cpu | ort-cuda | tensorrt
    int threads = 0;                                       // 0: all cores
    std::optional<TileSize> tile;                          // default: as the Python runtime
    std::int64_t max_memory = 0;                           // bytes; 0: the Python runtime's default
    bool allow_engine_host_code = false;                   // TensorRT version-compatible engines (host code)
    // fp32 | fp16 | int8 | auto: the graphs of the lines and pixels stages (auto: the backend's fastest whose
    // error recorded by creps-calib meets the bundle's bar); TensorRT: must match its engines (auto: theirs).
    // Empty: as exported (fp32 on ONNX Runtime, the engines' own on TensorRT), as creps.runtime's default.
    std::string precision;
};

struct GenerateOptions {
    float psi = 1.0f;                                      // truncation
    std::optional<Window> window;                          // default: the whole canvas
    std::string fit = "extend";                            // extend | stretch
    int batch = 1;                                         // images per mapping/lines/pixels call
    // optional: called after each line chunk and pixel tile (total: all of the request's); may throw to stop
    std::function<void(std::int64_t done, std::int64_t total)> progress;
};

struct Image {                                             // uint8 RGB, row-major, height*width*3
    int width = 0, height = 0;
    std::vector<std::uint8_t> rgb;
};

struct ModelInfo { int z_dim, w_dim, num_ws, img_resolution, img_channels; };

class Runtime {
public:
    // Reads and verifies the bundle (manifest, every file's sha256) and opens the backend.
    explicit Runtime(const std::string& bundle_dir, Options options = {});
    ~Runtime();
    Runtime(Runtime&&) noexcept;
    Runtime& operator=(Runtime&&) noexcept;

    std::string backend_name() const;
    std::string precision() const;                        // what "auto" chose
    ModelInfo model() const;

    std::vector<float> z(const std::vector<std::int64_t>& seeds) const;    // numpy RandomState(s).randn(1, z_dim)
    std::vector<float> mapping(const std::vector<float>& z, float psi);    // n*z_dim -> n*num_ws*w_dim

    std::vector<Image> generate(const std::vector<std::int64_t>& seeds, Size size = {}, const GenerateOptions& = {});
    std::vector<Image> generate_z(const std::vector<float>& z, Size size = {}, const GenerateOptions& = {});
    std::vector<Image> generate_ws(const std::vector<float>& ws, Size size = {}, const GenerateOptions& = {});
    // Streams each image to its PNG band by band (temporary name, then rename).
    void save(const std::vector<std::string>& paths, const std::vector<std::int64_t>& seeds, Size size = {},
              const GenerateOptions& = {});

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace creps
