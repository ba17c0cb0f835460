// ONNX Runtime through its C++ API, as creps.runtime.backends.OrtBackend: the CPU (each call on one thread,
// as many calls at once as threads) or the CUDA provider, never a quiet fallback to the CPU.
#include <algorithm>
#include <map>
#include <mutex>
#include <sched.h>
#include <thread>

#include <onnxruntime_cxx_api.h>

#include "backend.hpp"
#include "bundle.hpp"
#include "precision.hpp"

namespace creps::detail {
namespace {

const char* const RUN_STAGES[] = {"mapping", "lines", "pixels"};

int available_cores() {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
    return std::max(1u, std::thread::hardware_concurrency());
}

Ort::Env& environment() {  // one per process, created on first use
    static Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "creps");
    return env;
}

// The text Python's onnxruntime gives an error: "[ONNXRuntimeError] : CODE : NAME : message".
std::string python_text(const Ort::Exception& exc) {
    static const char* const names[] = {"OK", "FAIL", "INVALID_ARGUMENT", "NO_SUCHFILE", "NO_MODEL", "ENGINE_ERROR",
                                        "RUNTIME_EXCEPTION", "INVALID_PROTOBUF", "MODEL_LOADED", "NOT_IMPLEMENTED",
                                        "INVALID_GRAPH", "EP_FAIL"};
    int code = exc.GetOrtErrorCode();
    std::string name = code >= 0 && code < 12 ? names[code] : "GENERAL ERROR";
    std::string text = "[ONNXRuntimeError] : " + std::to_string(code) + " : " + name + " : " + exc.what();
    return text.substr(0, text.find('\n'));
}

class OrtBackend final : public Backend {
public:
    OrtBackend(const BundleRef& ref, const std::string& device, int threads, const std::string& precision)
        : name_("ort-" + device), bundle_(bundle_from(ref)), precision_(choose_precision(bundle_, name_, precision)) {
        bool cpu = device == "cpu";
        int cores = threads > 0 ? threads : available_cores();
        workers_ = cpu ? cores : 1;
        std::string provider = cpu ? "CPUExecutionProvider" : "CUDAExecutionProvider";
        std::vector<std::string> providers = Ort::GetAvailableProviders();
        if (std::find(providers.begin(), providers.end(), provider) == providers.end())
            throw BackendUnavailable(name_ + ": this onnxruntime has no " + provider +
                                     " (install onnxruntime-gpu matching your CUDA, or use --backend ort-cpu)");
        Ort::SessionOptions options;
        options.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
        options.SetExecutionMode(ExecutionMode::ORT_SEQUENTIAL);
        options.SetIntraOpNumThreads(workers_ > 1 ? 1 : cores);
        options.SetInterOpNumThreads(1);
        options.SetLogSeverityLevel(3);
        if (!cpu) append_cuda(options, provider);
        for (const char* stage : RUN_STAGES) {
            std::string key = graph_key(stage, stage_precision(stage, precision_));
            std::filesystem::path path = bundle_.dir / bundle_.manifest["graphs"][key]["file"].get<std::string>();
            std::string shown = bundle_.display(path.filename().string());
            try {
                sessions_.emplace(stage, Ort::Session(environment(), path.c_str(), options));
            } catch (const Ort::Exception& exc) {
                if (!cpu && exc.GetOrtErrorCode() == ORT_EP_FAIL) unavailable(provider);
                throw BundleError(shown + ": ONNX Runtime cannot load it (" + python_text(exc) + ")");
            }
            check(stage, key, sessions_.at(stage));
        }
    }

    std::string name() const override { return name_; }
    std::string precision() const override { return precision_; }
    int parallel(const std::string& stage) const override { return stage == "mapping" ? 1 : workers_; }

    void run(const std::string& stage, const Call& call) override {
        Ort::Session& session = sessions_.at(stage);
        Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
        auto values = [&](const std::vector<TensorView>& tensors) {
            std::vector<Ort::Value> out;
            for (const TensorView& t : tensors) {
                size_t count = 1;
                for (std::int64_t d : t.shape) count *= static_cast<size_t>(d);
                out.push_back(Ort::Value::CreateTensor<float>(memory, t.data, count, t.shape.data(), t.shape.size()));
            }
            return out;
        };
        std::vector<Ort::Value> inputs = values(call.inputs), outputs = values(call.outputs);
        std::vector<const char*> in_names, out_names;
        for (const TensorView& t : call.inputs) in_names.push_back(t.name.c_str());
        for (const TensorView& t : call.outputs) out_names.push_back(t.name.c_str());
        try {  // outputs bound to the caller's buffers: ONNX Runtime writes the results there
            session.Run(Ort::RunOptions{nullptr}, in_names.data(), inputs.data(), inputs.size(), out_names.data(),
                        outputs.data(), outputs.size());
        } catch (const Ort::Exception& exc) {
            throw Error(stage + " graph: ONNX Runtime failed (" + python_text(exc) + ")");
        }
    }

private:
    [[noreturn]] void unavailable(const std::string& provider) const {
        throw BackendUnavailable(name_ + ": ONNX Runtime cannot use " + provider +
                                 " here (it fell back to CPUExecutionProvider: no usable GPU, or CUDA/cuDNN "
                                 "libraries missing); use --backend ort-cpu");
    }

    void append_cuda(Ort::SessionOptions& options, const std::string& provider) const {
        const OrtApi& api = Ort::GetApi();
        OrtCUDAProviderOptionsV2* cuda = nullptr;
        OrtStatus* status = api.CreateCUDAProviderOptions(&cuda);
        if (!status) status = api.SessionOptionsAppendExecutionProvider_CUDA_V2(options, cuda);
        if (cuda) api.ReleaseCUDAProviderOptions(cuda);
        if (status) {
            api.ReleaseStatus(status);
            unavailable(provider);
        }
    }

    // The graph's IO against the stage contract (names) and its manifest entry (shapes), as check_io and
    // check_graph_file do.
    void check(const std::string& stage, const std::string& key, Ort::Session& session) {
        Ort::AllocatorWithDefaultOptions allocator;
        std::map<std::string, ojson> shapes;
        struct { std::vector<std::string> inputs, outputs; } io;
        auto read = [&](size_t count, bool input) {
            for (size_t i = 0; i < count; ++i) {
                std::string name = (input ? session.GetInputNameAllocated(i, allocator)
                                          : session.GetOutputNameAllocated(i, allocator)).get();
                Ort::TypeInfo type = input ? session.GetInputTypeInfo(i) : session.GetOutputTypeInfo(i);
                auto info = type.GetTensorTypeAndShapeInfo();
                std::vector<std::int64_t> dims = info.GetShape();
                std::vector<const char*> symbols(dims.size(), nullptr);
                info.GetSymbolicDimensions(symbols.data(), symbols.size());
                ojson shape = ojson::array();
                for (size_t d = 0; d < dims.size(); ++d)  // as Python's NodeArg.shape: int, name or None
                    shape.push_back(dims[d] >= 0 ? ojson(dims[d])
                                    : symbols[d] && *symbols[d] ? ojson(symbols[d]) : ojson());
                shapes[name] = shape;
                (input ? io.inputs : io.outputs).push_back(name);
            }
        };
        read(session.GetInputCount(), true);
        read(session.GetOutputCount(), false);
        const StageSpec& spec = bundle_.stages.at(stage);
        std::vector<std::string> want_in, want_out;
        for (const TensorSpec& t : spec.inputs) want_in.push_back(t.name);
        for (const TensorSpec& t : spec.outputs) want_out.push_back(t.name);
        auto sorted = [](std::vector<std::string> v) {
            std::sort(v.begin(), v.end());
            return v;
        };
        if (sorted(io.inputs) != sorted(want_in) || sorted(io.outputs) != sorted(want_out))
            throw BundleError(bundle_.path + ": " + stage + " graph has inputs " + py_list(io.inputs) +
                              " and outputs " + py_list(io.outputs) + ", the runtime needs " + py_list(want_in) +
                              " -> " + py_list(want_out) + "; re-export the bundle");
        check_graph_file(bundle_, key, shapes);
    }

    std::string name_;
    Bundle bundle_;
    std::string precision_;
    int workers_ = 1;
    std::map<std::string, Ort::Session> sessions_;
};

}  // namespace

std::unique_ptr<Backend> make_ort_backend(const BundleRef& bundle, const std::string& device, int threads,
                                          const std::string& precision) {
    return std::make_unique<OrtBackend>(bundle, device, threads, precision);
}

}  // namespace creps::detail
