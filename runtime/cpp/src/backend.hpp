// The backend interface of the C++ runtime (internal, not installed). A backend runs one stage of the
// bundle on caller-owned host tensors; everything else (seeds, coordinates, tiling, PNG) lives above it.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>

#include "creps/runtime.hpp"

namespace creps::detail {

// A backend cannot run here (library, provider, GPU or engine missing or mismatched): "auto" falls back
// to the next backend on it, as the Python runtime does on BackendUnavailable.
using BackendUnavailable = creps::BackendUnavailable;  // public (runtime.hpp), so the C API maps it to a status

// A float32 C-order host tensor the caller owns. Inputs and outputs are listed in the manifest's
// "stages" order for that stage; the caller allocates the outputs with the shapes the stage contract gives.
struct TensorView {
    std::string name;
    std::vector<int64_t> shape;
    float* data;
};

struct Call {
    std::vector<TensorView> inputs;
    std::vector<TensorView> outputs;
};

struct AxisRange { int64_t min, max; };

// The bundle as the backends see it: its folder and its parsed, validated manifest (hashes checked).
struct BundleRef {
    std::filesystem::path dir;
    const nlohmann::json* manifest;
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual std::string name() const = 0;                              // "ort-cpu", "ort-cuda", "tensorrt"
    // The precision of the lines and pixels graphs it runs (what "auto" chose); TensorRT: its engines'.
    virtual std::string precision() const { return "fp32"; }
    virtual void run(const std::string& stage, const Call& call) = 0;  // throws creps::Error
    // Runs calls in order: produce() gives the next call (nullopt when done); consume() gets each finished
    // call, in order; a call's buffers stay valid until it is consumed (produce() never reuses them before), so
    // a backend may produce several calls ahead. Default: run() each in turn. TensorRT overrides it to
    // double-buffer (upload of call i+1 overlaps the download of call i).
    virtual void run_stream(const std::string& stage, const std::function<std::optional<Call>()>& produce,
                            const std::function<void(const Call&)>& consume);
    // How many run() calls of a stage the runtime may make at once, from as many threads (1: one at a time,
    // through run_stream). ONNX Runtime on the CPU: one per thread, each call on one core.
    virtual int parallel(const std::string& stage) const {
        (void)stage;
        return 1;
    }
    // The range a dynamic axis of an input accepts on this backend (TensorRT: the engine's profile);
    // nullopt: any size.
    virtual std::optional<AxisRange> axis_range(const std::string& stage, const std::string& input,
                                                int axis) const {
        (void)stage, (void)input, (void)axis;
        return std::nullopt;
    }
};

// Backends throw creps::BackendUnavailable (runtime.hpp) when they cannot run on this machine ("auto" then
// tries the next), creps::BundleError for a graph or engine that does not match the bundle, creps::Error else.
// device: "cpu" or "cuda"; threads: 0 lets ONNX Runtime choose (all cores).
// precision: the graphs to run (fp32, fp16, int8 or auto; creps.runtime.precision), chosen before loading.
std::unique_ptr<Backend> make_ort_backend(const BundleRef& bundle, const std::string& device, int threads,
                                          const std::string& precision = "fp32");
#ifdef CREPS_WITH_TENSORRT
std::unique_ptr<Backend> make_tensorrt_backend(const BundleRef& bundle, bool allow_engine_host_code);
#endif

}  // namespace creps::detail
