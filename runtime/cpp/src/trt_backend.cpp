// The TensorRT backend: one engine and one execution context per stage, one CUDA stream. It repeats
// runtime/trt.py (the Python backend) in C++: the same checks in the same order, the same messages.
//
// Life cycle: check each engine's manifest entry against this machine (TensorRT version, GPU, host
// code) and refuse a mismatch with the command that rebuilds it; read each engine file once, check
// those bytes against the manifest's sha256 and deserialize them; create one execution context per
// engine; allocate two slots of device buffers and page-locked host buffers per engine, sized from the
// engine's optimization profile maxima. Every resource is owned by an RAII member made in order, so a
// failure part-way frees what was made before it, in reverse; the destructor first waits for the stream.
//
// Host code: a version-compatible engine embeds TensorRT's lean runtime, executable host code that
// runs in this process; IRuntime::setEngineHostCodeAllowed(true) is set only on the caller's explicit
// opt-in and only for bytes whose sha256 matched the manifest.
//
// Overlap: run_stream double-buffers calls over the two slots: call i+1 is staged into the other
// slot's pinned buffers and enqueued (upload, execute, download) while the GPU still works on call i;
// call i's outputs are copied out and handed to the caller when its event completes.
//
// Written to the TensorRT 10.3 and 11.x C++ API: every member used here exists in both
// (scripts/check_trt_headers.sh compiles this file against both header sets).
#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <sstream>

#include "backend.hpp"
#include "bundle.hpp"
#include "creps/runtime.hpp"
#include "pyformat.hpp"

namespace creps::detail {
namespace {

constexpr int SLOTS = 2;
const char* const RUN_STAGES[] = {"mapping", "lines", "pixels"};
// Version-compatible engines of one major release that a later major runs (TensorRT 11 support
// matrix, "Engine Portability": 10.x engines on an 11.x runtime). Within a major, any later version.
const std::map<int, std::vector<int>> LATER_MAJORS = {{10, {11}}};

// The bundle's folder as the Python messages show it (str(Path)).
std::string folder(const BundleRef& bundle) { return py_path(bundle.dir.string()); }

std::string rebuild(const BundleRef& bundle) {
    return "rebuild the engines on this machine: creps-export --out " + folder(bundle) + " --trt";
}

// A backend that cannot run here (GPU, engine or library missing or mismatched).
[[noreturn]] void unavailable(const std::string& text) { throw BackendUnavailable(text); }

void cuda_check(cudaError_t err) {
    if (err != cudaSuccess)
        throw Error("CUDA error " + std::to_string(static_cast<int>(err)) + ": " + cudaGetErrorString(err));
}

// Python's repr of a tuple of ints: (1,) and (1, 512).
std::string tuple_text(const std::vector<int64_t>& v) {
    std::string s = "(";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
    return s + (v.size() == 1 ? ",)" : ")");
}

// A manifest field as Python's f-string shows entry.get(key): the string itself, or `fallback`.
std::string field(const nlohmann::json& entry, const char* key, const std::string& fallback) {
    auto it = entry.find(key);
    if (it == entry.end() || it->is_null()) return fallback;
    return it->is_string() ? it->get<std::string>() : it->dump();
}

bool flag(const nlohmann::json& entry, const char* key) {
    auto it = entry.find(key);
    return it != entry.end() && it->is_boolean() && it->get<bool>();
}

std::vector<int> version_tuple(const std::string& version) {
    std::vector<int> parts;
    std::stringstream in(version);
    for (std::string part; std::getline(in, part, '.');)
        if (!part.empty() && std::all_of(part.begin(), part.end(), [](unsigned char c) { return std::isdigit(c); }))
            parts.push_back(std::stoi(part));
    return parts;
}

// Whether TensorRT `here` runs an engine built by TensorRT `built` (runtime/trt.py runs_here). The build
// number (a 4th part) counts only when both versions have one: the manifest has trt.__version__, which is
// "10.3.0" in the pip wheels and "10.3.0.30" on JetPack, and the library here always says all four.
bool runs_here(const std::string& built, const std::string& here, bool version_compatible) {
    auto built_v = version_tuple(built), here_v = version_tuple(here);
    const size_t parts = std::min(built_v.size(), here_v.size());
    if (parts >= 3) {
        built_v.resize(parts);
        here_v.resize(parts);
    }
    if (!version_compatible) return here_v == built_v;
    if (built_v.empty() || here_v.empty()) return false;
    if (here_v[0] == built_v[0] && here_v >= built_v) return true;
    auto later = LATER_MAJORS.find(built_v[0]);
    return later != LATER_MAJORS.end() &&
           std::find(later->second.begin(), later->second.end(), here_v[0]) != later->second.end();
}

struct Device {
    std::string name, compute_capability;  // "8.7"
};

Device current_device() {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess)
        unavailable("tensorrt: no usable CUDA device (CUDA error " + std::to_string(static_cast<int>(err)) + ": " +
                    cudaGetErrorString(err) + ")");
    if (count == 0) unavailable("tensorrt: no CUDA device on this machine");
    int device = 0;
    cuda_check(cudaGetDevice(&device));
    cudaDeviceProp props{};
    cuda_check(cudaGetDeviceProperties(&props, device));
    return {std::string(props.name, strnlen(props.name, sizeof props.name)),
            std::to_string(props.major) + "." + std::to_string(props.minor)};
}

// The version of the TensorRT library this process loaded (not of the headers'): major.minor.patch.build.
std::string tensorrt_version() {
    return std::to_string(getInferLibMajorVersion()) + "." + std::to_string(getInferLibMinorVersion()) + "." +
           std::to_string(getInferLibPatchVersion()) + "." + std::to_string(getInferLibBuildVersion());
}

const nlohmann::json& engine_for(const BundleRef& bundle, const std::string& stage) {
    const auto& manifest = *bundle.manifest;
    auto engines = manifest.find("engines");
    if (engines == manifest.end() || !engines->is_object() || !engines->contains(stage))
        unavailable("tensorrt: the bundle has no " + stage + " engine; build them with creps-export --out " +
                    folder(bundle) + " --trt");
    return (*engines)[stage];
}

// Refuse an engine built for another TensorRT or GPU (runtime/trt.py check_engine).
void check_engine(const nlohmann::json& entry, const BundleRef& bundle, const std::string& here,
                  const Device& device) {
    const std::string file = field(entry, "file", "?");
    const std::string built = field(entry, "tensorrt_version", "?");
    if (!runs_here(built, here, flag(entry, "version_compatible")))
        unavailable("tensorrt: engine " + file + " was built with TensorRT " + built + ", this machine has " + here +
                    "; " + rebuild(bundle));
    const std::string level = field(entry, "hardware_compatibility", "none");
    const std::string cc_built = field(entry, "compute_capability", "?"), &cc_here = device.compute_capability;
    bool ok;
    if (level == "ampere_plus")
        ok = version_tuple(cc_here) >= std::vector<int>{8, 0};
    else if (level == "same_compute_capability")
        ok = cc_here == cc_built;
    else
        ok = cc_here == cc_built && device.name == field(entry, "gpu_name", "None");
    if (!ok)
        unavailable("tensorrt: engine " + file + " was built for " + field(entry, "gpu_name", "None") +
                    " (compute capability " + cc_built + "), this GPU is " + device.name + " (" + cc_here + "); " +
                    rebuild(bundle));
}

// Refuse a version-compatible engine (it carries executable host code) unless the caller allowed it.
void check_host_code(const nlohmann::json& entry, const BundleRef& bundle, bool allowed) {
    if (flag(entry, "version_compatible") && !allowed)
        unavailable("tensorrt: engine " + field(entry, "file", "?") +
                    " is version-compatible, so it carries TensorRT's lean runtime as executable host code, run "
                    "only on request: if you trust this bundle, pass creps-run --allow-engine-host-code "
                    "(Runtime(..., allow_engine_host_code=True)), or rebuild it without --version-compatible: "
                    "creps-export --out " + folder(bundle) + " --trt");
}

std::string sha256_hex(const std::vector<char>& data) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    if (EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr) != 1)
        throw Error("tensorrt: OpenSSL cannot compute a sha256");
    static const char hex[] = "0123456789abcdef";
    std::string text;
    for (unsigned int i = 0; i < length; ++i) text += {hex[digest[i] >> 4], hex[digest[i] & 15]};
    return text;
}

std::vector<char> read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    std::vector<char> data(in ? size_t(in.tellg()) : 0);
    if (!in || !in.seekg(0) || !in.read(data.data(), std::streamsize(data.size())))
        throw BundleError(path.string() + ": cannot read it");
    return data;
}

// The stage contract's IO names, in call order (a manifest's recorded "stages" equal these: bundle.cpp).
std::vector<std::string> contract_names(const std::string& stage, const char* side) {
    std::vector<std::string> names;
    for (const auto& tensor : builtin_stages().at(stage).at(side))
        names.push_back(tensor.at("name").get<std::string>());
    return names;
}

// Refuse an engine whose IO names are not the stage contract's (runtime/backends.py check_io).
void check_io(const BundleRef& bundle, const std::string& stage, const std::vector<std::string>& inputs,
              const std::vector<std::string>& outputs) {
    auto want_in = contract_names(stage, "inputs"), want_out = contract_names(stage, "outputs");
    auto sorted = [](std::vector<std::string> v) { std::sort(v.begin(), v.end()); return v; };
    if (sorted(inputs) != sorted(want_in) || sorted(outputs) != sorted(want_out))
        throw BundleError(folder(bundle) + ": " + stage + " graph has inputs " + py_list(inputs) + " and outputs " +
                          py_list(outputs) + ", the runtime needs " + py_list(want_in) + " -> " + py_list(want_out) +
                          "; re-export the bundle");
}

std::vector<int64_t> dims_vector(const nvinfer1::Dims& dims) {
    return {dims.d, dims.d + std::max(0, int(dims.nbDims))};
}

int64_t volume(const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

const TensorView& find_view(const std::vector<TensorView>& views, const std::string& name, const std::string& stage) {
    for (const auto& view : views)
        if (view.name == name) return view;
    throw Error("tensorrt: the " + stage + " call has no tensor " + name);
}

// TensorRT objects are released with delete (TensorRT 10 and 11); CUDA resources with their own calls.
struct TrtDelete {
    template <class T> void operator()(T* p) const { delete p; }
};
template <class T> using TrtPtr = std::unique_ptr<T, TrtDelete>;

struct DeviceFree { void operator()(void* p) const { cudaFree(p); } };
struct HostFree { void operator()(void* p) const { cudaFreeHost(p); } };
struct EventDestroy { void operator()(CUevent_st* e) const { cudaEventDestroy(e); } };
struct StreamDestroy { void operator()(CUstream_st* s) const { cudaStreamDestroy(s); } };
using DeviceBuffer = std::unique_ptr<void, DeviceFree>;
using HostBuffer = std::unique_ptr<void, HostFree>;
using Event = std::unique_ptr<CUevent_st, EventDestroy>;
using Stream = std::unique_ptr<CUstream_st, StreamDestroy>;

class Logger : public nvinfer1::ILogger {
public:
    void log(Severity severity, const char* msg) noexcept override {
        if (severity <= Severity::kWARNING) std::fprintf(stderr, "[TensorRT] %s\n", msg);
    }
};

// Device and pinned host buffers of one in-flight call, an event marking its completion.
struct Slot {
    std::map<std::string, DeviceBuffer> device;
    std::map<std::string, HostBuffer> host;
    Event event;
    std::optional<Call> call;  // the call in flight, whose outputs this slot's host buffers will hold

    explicit Slot(const std::map<std::string, size_t>& bytes) {
        for (const auto& [name, size] : bytes) {
            void* p = nullptr;
            cuda_check(cudaMalloc(&p, size));
            device.emplace(name, DeviceBuffer(p));
            p = nullptr;
            cuda_check(cudaMallocHost(&p, size));
            host.emplace(name, HostBuffer(p));
        }
        cudaEvent_t e = nullptr;
        cuda_check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
        event.reset(e);
    }
};

// One deserialized engine, its context, its IO and its buffer slots. Members are destroyed in reverse:
// slots, then the context, then the engine it was made from (TensorRT's order).
class StageEngine {
public:
    StageEngine(nvinfer1::IRuntime& runtime, const BundleRef& bundle, const std::string& stage,
                const nlohmann::json& entry, bool host_code)
        : stage_(stage) {
        const std::string file = entry.at("file").get<std::string>();
        const auto path = bundle.dir / file;
        // Hashed and deserialized from the same bytes: nothing can swap the file in between.
        const auto data = read_file(path);
        if (sha256_hex(data) != entry.at("sha256").get<std::string>())
            throw BundleError(folder(bundle) + ": " + file + " (" + stage + " engine) does not match its sha256 in "
                              "the manifest (corrupt or altered); " + rebuild(bundle));
        runtime.setEngineHostCodeAllowed(host_code);
        engine_.reset(runtime.deserializeCudaEngine(data.data(), data.size()));
        if (!engine_)
            unavailable("tensorrt: " + path.string() + " does not deserialize here (see the TensorRT log above); " +
                        rebuild(bundle));
        context_.reset(engine_->createExecutionContext());
        if (!context_) throw Error("tensorrt: cannot create an execution context for " + path.string());
        for (int32_t i = 0; i < engine_->getNbIOTensors(); ++i) {
            const std::string name = engine_->getIOTensorName(i);
            (engine_->getTensorIOMode(name.c_str()) == nvinfer1::TensorIOMode::kINPUT ? inputs_ : outputs_)
                .push_back(name);
        }
        check_io(bundle, stage, inputs_, outputs_);
        for (const auto* names : {&inputs_, &outputs_})
            for (const auto& name : *names)
                if (engine_->getTensorDataType(name.c_str()) != nvinfer1::DataType::kFLOAT)
                    unavailable("tensorrt: " + path.string() + ": tensor " + name + " is not float32; " +
                                rebuild(bundle));
        for (const auto& name : inputs_) ranges_[name] = profile(name);
        for (const auto& name : inputs_) set_shape(name, ranges_[name][2]);  // the largest call sizes the buffers
        std::map<std::string, size_t> bytes;
        for (const auto& name : inputs_) bytes[name] = buffer_bytes(ranges_[name][2]);
        for (const auto& name : outputs_) bytes[name] = buffer_bytes(output_shape(name));
        for (int i = 0; i < SLOTS; ++i) slots_.emplace_back(bytes);
        capacity_ = bytes;
    }

    std::optional<AxisRange> axis_range(const std::string& input, int axis) const {
        auto it = ranges_.find(input);
        if (it == ranges_.end() || axis < 0 || axis >= int(it->second[0].size())) return std::nullopt;
        return AxisRange{it->second[0][axis], it->second[2][axis]};
    }

    Slot& slot(size_t i) { return slots_[i % SLOTS]; }

    // Stage the call's inputs into the slot's pinned buffers and enqueue upload, execute, download.
    void submit(Slot& slot, Call call, cudaStream_t stream) {
        for (const auto& name : inputs_) set_shape(name, find_view(call.inputs, name, stage_).shape);
        for (const auto& name : outputs_) {  // shapes first: a refused call touches no buffer
            auto shape = output_shape(name);
            const auto& view = find_view(call.outputs, name, stage_);
            if (view.shape != shape)
                throw Error("tensorrt: the " + stage_ + " engine gives " + name + " shape " + tuple_text(shape) +
                            ", the runtime expects " + tuple_text(view.shape));
        }
        for (const auto& name : inputs_) {
            const auto& view = find_view(call.inputs, name, stage_);
            const size_t size = checked_bytes(name, view.shape);
            std::memcpy(slot.host[name].get(), view.data, size);
            cuda_check(cudaMemcpyAsync(slot.device[name].get(), slot.host[name].get(), size, cudaMemcpyHostToDevice,
                                       stream));
        }
        for (const auto* names : {&inputs_, &outputs_})
            for (const auto& name : *names)
                if (!context_->setTensorAddress(name.c_str(), slot.device[name].get()))
                    throw Error("tensorrt: cannot set the address of " + stage_ + " tensor " + name);
        if (!context_->enqueueV3(stream))
            throw Error("tensorrt: executing the " + stage_ + " engine failed (see the TensorRT log)");
        for (const auto& name : outputs_) {
            const size_t size = checked_bytes(name, find_view(call.outputs, name, stage_).shape);
            cuda_check(cudaMemcpyAsync(slot.host[name].get(), slot.device[name].get(), size, cudaMemcpyDeviceToHost,
                                       stream));
        }
        cuda_check(cudaEventRecord(slot.event.get(), stream));
        slot.call = std::move(call);
    }

    // Wait for the slot's call, copy its outputs into the caller's tensors; the call, for consume().
    Call collect(Slot& slot) {
        cuda_check(cudaEventSynchronize(slot.event.get()));
        Call call = std::move(*slot.call);
        slot.call.reset();
        for (const auto& view : call.outputs)
            std::memcpy(view.data, slot.host[view.name].get(), size_t(volume(view.shape)) * sizeof(float));
        return call;
    }

private:
    // (min, opt, max) shapes of an input in profile 0; a static input (psi) is its shape thrice.
    std::array<std::vector<int64_t>, 3> profile(const std::string& name) const {
        auto shape = dims_vector(engine_->getTensorShape(name.c_str()));
        if (std::all_of(shape.begin(), shape.end(), [](int64_t d) { return d >= 0; })) return {shape, shape, shape};
        if (engine_->getNbOptimizationProfiles() < 1)
            throw Error("tensorrt: the " + stage_ + " engine has no optimization profile for " + name);
        using nvinfer1::OptProfileSelector;
        std::array<std::vector<int64_t>, 3> range;
        const OptProfileSelector selectors[] = {OptProfileSelector::kMIN, OptProfileSelector::kOPT,
                                                OptProfileSelector::kMAX};
        for (int i = 0; i < 3; ++i) {
            auto dims = engine_->getProfileShape(name.c_str(), 0, selectors[i]);
            if (dims.nbDims < 0) throw Error("tensorrt: the " + stage_ + " engine has no profile shape for " + name);
            range[i] = dims_vector(dims);
        }
        return range;
    }

    void set_shape(const std::string& name, const std::vector<int64_t>& shape) {
        nvinfer1::Dims dims{};
        bool ok = shape.size() <= size_t(nvinfer1::Dims::MAX_DIMS);
        if (ok) {
            dims.nbDims = int32_t(shape.size());
            std::copy(shape.begin(), shape.end(), dims.d);
            ok = context_->setInputShape(name.c_str(), dims);
        }
        if (!ok) {
            const auto& r = ranges_.at(name);
            throw Error("tensorrt: " + stage_ + " input " + name + " shape " + tuple_text(shape) +
                        " is outside the engine's profile [" + tuple_text(r[0]) + ", " + tuple_text(r[1]) + ", " +
                        tuple_text(r[2]) + "]");
        }
    }

    std::vector<int64_t> output_shape(const std::string& name) const {
        const auto dims = context_->getTensorShape(name.c_str());
        auto shape = dims_vector(dims);
        if (dims.nbDims < 0 || std::any_of(shape.begin(), shape.end(), [](int64_t d) { return d < 0; }))
            throw Error("tensorrt: the " + stage_ + " engine cannot infer the shape of " + name);
        return shape;
    }

    static size_t buffer_bytes(const std::vector<int64_t>& shape) {
        return std::max<size_t>(1, size_t(volume(shape))) * sizeof(float);
    }

    size_t checked_bytes(const std::string& name, const std::vector<int64_t>& shape) const {
        const size_t size = size_t(volume(shape)) * sizeof(float);
        if (size > capacity_.at(name))
            throw Error("tensorrt: " + stage_ + " tensor " + name + " shape " + tuple_text(shape) +
                        " exceeds the engine's profile");
        return size;
    }

    std::string stage_;
    TrtPtr<nvinfer1::ICudaEngine> engine_;
    TrtPtr<nvinfer1::IExecutionContext> context_;
    std::vector<std::string> inputs_, outputs_;
    std::map<std::string, std::array<std::vector<int64_t>, 3>> ranges_;
    std::map<std::string, size_t> capacity_;
    std::deque<Slot> slots_;  // a deque: a Slot is neither copied nor moved once made
};

class TensorRTBackend final : public Backend {
public:
    TensorRTBackend(const BundleRef& bundle, bool allow_engine_host_code) {
        const Device device = current_device();
        const std::string version = tensorrt_version();
        std::vector<std::pair<std::string, const nlohmann::json*>> entries;
        for (const char* stage : RUN_STAGES) entries.emplace_back(stage, &engine_for(bundle, stage));
        for (const auto& [stage, entry] : entries) {  // every refusal before anything is allocated
            check_engine(*entry, bundle, version, device);
            check_host_code(*entry, bundle, allow_engine_host_code);
        }
        runtime_.reset(nvinfer1::createInferRuntime(logger_));
        if (!runtime_) unavailable("tensorrt: TensorRT cannot create its runtime (see the TensorRT log above)");
        cudaStream_t stream = nullptr;
        cuda_check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
        stream_.reset(stream);
        for (const auto& [stage, entry] : entries) {
            const bool host_code = flag(*entry, "version_compatible") && allow_engine_host_code;
            engines_.try_emplace(stage, *runtime_, bundle, stage, *entry, host_code);
        }
    }

    // Wait for work still queued on the stream (a run abandoned by an exception) before the members
    // free the buffers it uses.
    ~TensorRTBackend() override { cudaStreamSynchronize(stream_.get()); }

    std::string name() const override { return "tensorrt"; }

    void run(const std::string& stage, const Call& call) override {
        bool given = false;
        run_stream(
            stage,
            [&]() -> std::optional<Call> {
                if (given) return std::nullopt;
                given = true;
                return call;
            },
            [](const Call&) {});
    }

    // Double-buffered: call i+1 is submitted before call i is collected; a slot is reused only after
    // its previous call was collected; calls are collected (and consumed) in order.
    void run_stream(const std::string& stage, const std::function<std::optional<Call>()>& produce,
                    const std::function<void(const Call&)>& consume) override {
        StageEngine& engine = stage_engine(stage);
        struct Drain {  // on an exception, let queued work finish before the slots are staged again
            cudaStream_t stream;
            bool done = false;
            ~Drain() { if (!done) cudaStreamSynchronize(stream); }
        } drain{stream_.get()};
        size_t submitted = 0, collected = 0;
        while (auto call = produce()) {
            if (submitted - collected == SLOTS) consume(engine.collect(engine.slot(collected++)));
            engine.submit(engine.slot(submitted++), std::move(*call), stream_.get());
        }
        while (collected < submitted) consume(engine.collect(engine.slot(collected++)));
        drain.done = true;
    }

    std::optional<AxisRange> axis_range(const std::string& stage, const std::string& input, int axis) const override {
        auto it = engines_.find(stage);
        return it == engines_.end() ? std::nullopt : it->second.axis_range(input, axis);
    }

private:
    StageEngine& stage_engine(const std::string& stage) {
        auto it = engines_.find(stage);
        if (it == engines_.end()) throw Error("tensorrt: no engine for stage " + stage);
        return it->second;
    }

    Logger logger_;  // outlives the runtime and everything made through it
    TrtPtr<nvinfer1::IRuntime> runtime_;
    Stream stream_;
    std::map<std::string, StageEngine> engines_;
};

}  // namespace

std::unique_ptr<Backend> make_tensorrt_backend(const BundleRef& bundle, bool allow_engine_host_code) {
    return std::make_unique<TensorRTBackend>(bundle, allow_engine_host_code);
}

}  // namespace creps::detail
