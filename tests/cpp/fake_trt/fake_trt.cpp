// A simulator of one GPU behind the CUDA runtime and TensorRT runtime stand-ins (cuda_runtime_api.h,
// NvInferRuntime.h in this folder). Written from those APIs' documentation, not from creps.
//
// Set by the environment: FAKE_TRT_VERSION (the library's version, "10.3.0.30"), FAKE_GPU ("name|8.7"),
// FAKE_GPU_COUNT (default 1), FAKE_FAIL_AT (the n-th resource made — memory, pinned memory, stream, event,
// execution context — fails, as an exhausted GPU's does).
//
// CUDA: a stream queues its copies, kernels and event records and runs them only when the stream, or an
// event recorded on it, is synchronized; a copy reads its source when it runs, so host code that writes a
// pinned buffer before its earlier upload ran, or reads one before its download ran, sees wrong data.
// Device memory starts as 0xFF bytes (NaN). Freeing memory that queued work still uses, destroying a
// context whose kernels are queued, or an engine or runtime whose children live is undefined behaviour:
// the process prints UNDEFINED and aborts.
//
// TensorRT: an engine file is JSON {"fake_engine": 1, "host_code": bool, "inputs": [{"name", "shape"
// (-1 dynamic), "min", "opt", "max", "dtype"}], "outputs": [{"name", "dims": [int or [input, axis]],
// "dtype"}]}; its kernel writes out_o[i] = o + sum_k (k + 1) * in_k[i mod size_k] (inputs in file order).
// deserializeCudaEngine returns null for anything else, and for host code unless it was allowed.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "NvInferRuntime.h"
#include "fake_control.h"

using nlohmann::json;

namespace {

struct Live {
    int device = 0, pinned = 0, streams = 0, events = 0, runtimes = 0, engines = 0, contexts = 0;
} live;
int made = 0;  // resources made so far (FAKE_FAIL_AT counts them)
std::string trace;

[[noreturn]] void undefined(const std::string& what) {
    std::fprintf(stderr, "UNDEFINED: %s\n", what.c_str());
    std::fflush(stderr);
    std::abort();
}

bool fail_now() {
    const char* at = std::getenv("FAKE_FAIL_AT");
    return ++made == (at ? std::atoi(at) : 0);
}

std::string env(const char* name, const char* fallback) {
    const char* v = std::getenv(name);
    return v ? v : fallback;
}

std::map<const void*, size_t> device_blocks, pinned_blocks;

void* allocate(size_t size, unsigned char fill) {
    void* p = std::aligned_alloc(256, (size + 255) / 256 * 256);
    std::memset(p, fill, (size + 255) / 256 * 256);
    return p;
}

// The allocation of `blocks` that holds [p, p + size), or false.
bool inside(const std::map<const void*, size_t>& blocks, const void* p, size_t size) {
    auto it = blocks.upper_bound(p);
    if (it == blocks.begin()) return false;
    --it;
    auto base = static_cast<const char*>(it->first);
    return static_cast<const char*>(p) >= base && static_cast<const char*>(p) + size <= base + it->second;
}

struct Op {
    std::function<void()> run;
    std::vector<const void*> uses;  // memory the op reads or writes
    const void* context = nullptr;  // a kernel's execution context
};

}  // namespace

struct CUstream_st {
    std::deque<Op> queue;
    void run_one() {
        Op op = std::move(queue.front());
        queue.pop_front();
        op.run();
    }
    void run_all() {
        while (!queue.empty()) run_one();
    }
};

struct CUevent_st {
    CUstream_st* stream = nullptr;
    bool pending = false;
};

namespace {

std::set<CUstream_st*> streams;

bool queued_use(const void* p) {
    for (auto* s : streams)
        for (const Op& op : s->queue)
            if (std::find(op.uses.begin(), op.uses.end(), p) != op.uses.end() || op.context == p) return true;
    return false;
}

// The start of the allocation holding p (device or pinned), for use tracking.
const void* block_of(const void* p) {
    for (auto* blocks : {&device_blocks, &pinned_blocks}) {
        auto it = blocks->upper_bound(p);
        if (it != blocks->begin() && inside(*blocks, p, 0)) return (--it)->first;
    }
    return p;
}

}  // namespace

// ---- CUDA runtime -------------------------------------------------------------------------------------------
const char* cudaGetErrorString(cudaError_t error) {
    switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    }
    return "unknown error";
}

cudaError_t cudaGetDeviceCount(int* count) {
    *count = std::atoi(env("FAKE_GPU_COUNT", "1").c_str());
    return *count ? cudaSuccess : cudaErrorNoDevice;
}

cudaError_t cudaGetDevice(int* device) {
    *device = 0;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
    if (device != 0) return cudaErrorInvalidValue;
    const std::string gpu = env("FAKE_GPU", "Fake GPU|8.7");
    const size_t bar = gpu.find('|'), dot = gpu.find('.', bar);
    std::memset(prop, 0, sizeof *prop);
    std::snprintf(prop->name, sizeof prop->name, "%s", gpu.substr(0, bar).c_str());
    prop->major = std::atoi(gpu.substr(bar + 1, dot - bar - 1).c_str());
    prop->minor = std::atoi(gpu.substr(dot + 1).c_str());
    return cudaSuccess;
}

cudaError_t cudaMalloc(void** ptr, size_t size) {
    if (fail_now()) return cudaErrorMemoryAllocation;
    *ptr = allocate(size, 0xFF);
    device_blocks[*ptr] = size;
    ++live.device;
    return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
    if (!ptr) return cudaSuccess;
    if (!device_blocks.count(ptr)) return cudaErrorInvalidValue;
    if (queued_use(ptr)) undefined("cudaFree of memory that queued work still uses");
    device_blocks.erase(ptr);
    std::free(ptr);
    --live.device;
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void** ptr, size_t size) {
    if (fail_now()) return cudaErrorMemoryAllocation;
    *ptr = allocate(size, 0xAB);
    pinned_blocks[*ptr] = size;
    ++live.pinned;
    return cudaSuccess;
}

cudaError_t cudaFreeHost(void* ptr) {
    if (!pinned_blocks.count(ptr)) return cudaErrorInvalidValue;
    if (queued_use(ptr)) undefined("cudaFreeHost of memory that queued work still uses");
    pinned_blocks.erase(ptr);
    std::free(ptr);
    --live.pinned;
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
    if (flags & ~cudaStreamNonBlocking) return cudaErrorInvalidValue;
    if (fail_now()) return cudaErrorMemoryAllocation;
    *stream = new CUstream_st;
    streams.insert(*stream);
    ++live.streams;
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    if (!streams.count(stream)) return cudaErrorInvalidValue;
    stream->run_all();  // CUDA: queued work completes, then the stream's resources go
    streams.erase(stream);
    delete stream;
    --live.streams;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    if (!streams.count(stream)) return cudaErrorInvalidValue;
    stream->run_all();
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
    if (flags & ~cudaEventDisableTiming) return cudaErrorInvalidValue;
    if (fail_now()) return cudaErrorMemoryAllocation;
    *event = new CUevent_st;
    ++live.events;
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
    delete event;
    --live.events;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    if (!streams.count(stream)) return cudaErrorInvalidValue;
    event->stream = stream;
    event->pending = true;
    stream->queue.push_back({[event] { event->pending = false; }, {}, nullptr});
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
    while (event->pending) event->stream->run_one();  // a never-recorded event: returns at once
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream) {
    if (!streams.count(stream)) return cudaErrorInvalidValue;
    const bool to_device = kind == cudaMemcpyHostToDevice;
    if ((!to_device && kind != cudaMemcpyDeviceToHost) || !inside(device_blocks, to_device ? dst : src, count) ||
        inside(device_blocks, to_device ? src : dst, 0))
        undefined("cudaMemcpyAsync with pointers that do not match its kind or out of their allocation");
    const void* host = to_device ? src : dst;
    if (!inside(pinned_blocks, host, count)) {  // pageable: staged at the call, or synchronous
        if (to_device) {
            auto staged = std::make_shared<std::vector<char>>(static_cast<const char*>(src),
                                                              static_cast<const char*>(src) + count);
            stream->queue.push_back({[=] { std::memcpy(dst, staged->data(), count); }, {block_of(dst)}, nullptr});
        } else {
            stream->run_all();
            std::memcpy(dst, src, count);
        }
        return cudaSuccess;
    }
    stream->queue.push_back({[=] { std::memcpy(dst, src, count); }, {block_of(dst), block_of(src)}, nullptr});
    return cudaSuccess;
}

// ---- TensorRT -----------------------------------------------------------------------------------------------
namespace {

using nvinfer1::Dims;

struct Tensor {
    std::string name;
    bool input;
    std::vector<int64_t> shape, min, opt, max;  // inputs
    json dims;                                   // outputs: int or [input, axis] each
    std::string dtype;
};

Dims to_dims(const std::vector<int64_t>& v) {
    Dims d{};
    d.nbDims = int32_t(v.size());
    std::copy(v.begin(), v.end(), d.d);
    return d;
}

size_t volume(const std::vector<int64_t>& v) {
    size_t n = 1;
    for (auto x : v) n *= size_t(x);
    return n;
}

class FakeEngine;

class FakeContext final : public nvinfer1::IExecutionContext {
public:
    explicit FakeContext(FakeEngine& engine);
    ~FakeContext() noexcept override;
    bool setInputShape(const char* name, const Dims& dims) noexcept override;
    Dims getTensorShape(const char* name) const noexcept override;
    bool setTensorAddress(const char* name, void* data) noexcept override;
    bool enqueueV3(cudaStream_t stream) noexcept override;

private:
    std::vector<int64_t> shape_of(const Tensor& t) const;  // empty: not known yet
    FakeEngine& engine_;
    std::map<std::string, std::vector<int64_t>> shapes_;
    std::map<std::string, void*> addresses_;
};

class FakeEngine final : public nvinfer1::ICudaEngine {
public:
    FakeEngine(json spec, nvinfer1::ILogger& logger) : logger(logger) {
        for (const char* side : {"inputs", "outputs"})
            for (const auto& t : spec.at(side)) {
                Tensor tensor{t.at("name"), std::string(side) == "inputs", {}, {}, {}, {}, {},
                              t.value("dtype", "float32")};
                if (tensor.input) {
                    tensor.shape = t.at("shape").get<std::vector<int64_t>>();
                    tensor.min = t.value("min", tensor.shape);
                    tensor.opt = t.value("opt", tensor.shape);
                    tensor.max = t.value("max", tensor.shape);
                } else {
                    tensor.dims = t.at("dims");
                }
                tensors.push_back(tensor);
            }
        ++live.engines;
    }
    ~FakeEngine() noexcept override {
        if (contexts) undefined("an engine destroyed before its execution contexts");
        --live.engines;
    }
    nvinfer1::IExecutionContext* createExecutionContext(
        nvinfer1::ExecutionContextAllocationStrategy) noexcept override {
        if (fail_now()) {
            logger.log(nvinfer1::ILogger::Severity::kERROR, "createExecutionContext: out of device memory");
            return nullptr;
        }
        return new FakeContext(*this);
    }
    int32_t getNbIOTensors() const noexcept override { return int32_t(tensors.size()); }
    const char* getIOTensorName(int32_t i) const noexcept override {
        return i >= 0 && i < int32_t(tensors.size()) ? tensors[size_t(i)].name.c_str() : nullptr;
    }
    nvinfer1::TensorIOMode getTensorIOMode(const char* name) const noexcept override {
        const Tensor* t = find(name);
        using nvinfer1::TensorIOMode;
        return !t ? TensorIOMode::kNONE : t->input ? TensorIOMode::kINPUT : TensorIOMode::kOUTPUT;
    }
    nvinfer1::DataType getTensorDataType(const char* name) const noexcept override {
        const Tensor* t = find(name);
        return t && t->dtype == "float16" ? nvinfer1::DataType::kHALF : nvinfer1::DataType::kFLOAT;
    }
    Dims getTensorShape(const char* name) const noexcept override {
        const Tensor* t = find(name);
        if (!t) return Dims{-1, {}};
        if (t->input) return to_dims(t->shape);
        std::vector<int64_t> shape;  // dynamic output dims as -1
        for (const auto& d : t->dims) shape.push_back(d.is_number() ? d.get<int64_t>() : -1);
        return to_dims(shape);
    }
    int32_t getNbOptimizationProfiles() const noexcept override { return 1; }
    Dims getProfileShape(const char* name, int32_t profile,
                         nvinfer1::OptProfileSelector select) const noexcept override {
        const Tensor* t = find(name);
        if (!t || !t->input || profile != 0) return Dims{-1, {}};
        return to_dims(select == nvinfer1::OptProfileSelector::kMIN ? t->min
                       : select == nvinfer1::OptProfileSelector::kOPT ? t->opt : t->max);
    }
    const Tensor* find(const char* name) const {
        for (const auto& t : tensors)
            if (name && t.name == name) return &t;
        return nullptr;
    }

    std::vector<Tensor> tensors;
    nvinfer1::ILogger& logger;
    int contexts = 0;
};

FakeContext::FakeContext(FakeEngine& engine) : engine_(engine) {
    ++engine_.contexts;
    ++live.contexts;
}

FakeContext::~FakeContext() noexcept {
    if (queued_use(this)) undefined("an execution context destroyed while its work is queued");
    --engine_.contexts;
    --live.contexts;
}

bool FakeContext::setInputShape(const char* name, const Dims& dims) noexcept {
    const Tensor* t = engine_.find(name);
    std::vector<int64_t> shape(dims.d, dims.d + std::max(0, int(dims.nbDims)));
    bool ok = t && t->input && shape.size() == t->shape.size();
    for (size_t i = 0; ok && i < shape.size(); ++i)
        ok = (t->shape[i] < 0 || t->shape[i] == shape[i]) && t->min[i] <= shape[i] && shape[i] <= t->max[i];
    if (!ok) {
        engine_.logger.log(nvinfer1::ILogger::Severity::kERROR, "setInputShape: not an input, or outside profile 0");
        return false;
    }
    shapes_[name] = shape;
    return true;
}

std::vector<int64_t> FakeContext::shape_of(const Tensor& t) const {
    if (t.input) {
        auto it = shapes_.find(t.name);
        return it != shapes_.end() ? it->second
               : std::all_of(t.shape.begin(), t.shape.end(), [](int64_t d) { return d >= 0; }) ? t.shape
                                                                                              : std::vector<int64_t>{};
    }
    std::vector<int64_t> shape;
    for (const auto& d : t.dims) {
        if (d.is_number()) {
            shape.push_back(d.get<int64_t>());
            continue;
        }
        const Tensor* from = engine_.find(d.at(0).get<std::string>().c_str());
        auto s = shape_of(*from);
        if (s.empty()) return {};
        shape.push_back(s[d.at(1).get<size_t>()]);
    }
    return shape;
}

Dims FakeContext::getTensorShape(const char* name) const noexcept {
    const Tensor* t = engine_.find(name);
    if (!t) return Dims{-1, {}};
    auto shape = shape_of(*t);
    return shape.empty() ? engine_.getTensorShape(name) : to_dims(shape);
}

bool FakeContext::setTensorAddress(const char* name, void* data) noexcept {
    if (!engine_.find(name) || reinterpret_cast<uintptr_t>(data) % 256) {
        engine_.logger.log(nvinfer1::ILogger::Severity::kERROR, "setTensorAddress: no such tensor, or not aligned");
        return false;
    }
    addresses_[name] = data;
    return true;
}

bool FakeContext::enqueueV3(cudaStream_t stream) noexcept {
    struct Bound {
        float* data;
        size_t size;
    };
    std::vector<Bound> ins, outs;
    std::vector<const void*> uses;
    for (const auto& t : engine_.tensors) {
        auto shape = shape_of(t);
        auto it = addresses_.find(t.name);
        if (shape.empty() || it == addresses_.end()) {
            engine_.logger.log(nvinfer1::ILogger::Severity::kERROR, "enqueueV3: an input shape or address not set");
            return false;
        }
        if (!inside(device_blocks, it->second, volume(shape) * sizeof(float)))
            undefined("a tensor address outside device memory or its allocation");
        (t.input ? ins : outs).push_back({static_cast<float*>(it->second), volume(shape)});
        uses.push_back(block_of(it->second));
    }
    // Shapes and addresses as they are now; the values when the kernel runs.
    stream->queue.push_back({[ins, outs] {
                                 for (size_t o = 0; o < outs.size(); ++o)
                                     for (size_t i = 0; i < outs[o].size; ++i) {
                                         float v = float(o);
                                         for (size_t k = 0; k < ins.size(); ++k)
                                             v += float(k + 1) * ins[k].data[i % ins[k].size];
                                         outs[o].data[i] = v;
                                     }
                             },
                             uses, this});
    return true;
}

class FakeRuntime final : public nvinfer1::IRuntime {
public:
    explicit FakeRuntime(nvinfer1::ILogger& logger) : logger_(logger) { ++live.runtimes; }
    ~FakeRuntime() noexcept override {
        if (engines_alive()) undefined("a runtime destroyed before its engines");
        --live.runtimes;
    }
    nvinfer1::ICudaEngine* deserializeCudaEngine(const void* blob, std::size_t size) noexcept override {
        json spec = json::parse(static_cast<const char*>(blob), static_cast<const char*>(blob) + size, nullptr, false);
        const bool engine = spec.is_object() && spec.value("fake_engine", 0) == 1;
        const bool host_code = engine && spec.value("host_code", false);
        trace += "deserialize host_code_allowed=" + std::to_string(allowed_) + "\n";
        if (!engine || (host_code && !allowed_)) {
            logger_.log(nvinfer1::ILogger::Severity::kERROR,
                        engine ? "the engine has host code and host code is not allowed" : "not an engine");
            return nullptr;
        }
        return new FakeEngine(spec, logger_);
    }
    void setEngineHostCodeAllowed(bool allowed) noexcept override { allowed_ = allowed; }

private:
    static bool engines_alive() { return live.engines > 0; }
    nvinfer1::ILogger& logger_;
    bool allowed_ = false;
};

int32_t version_part(int index) {  // of FAKE_TRT_VERSION, major.minor.patch.build (build 0 if not given)
    const std::string v = env("FAKE_TRT_VERSION", "10.3.0.30");
    size_t start = 0;
    for (int i = 0; i < index; ++i) {
        start = v.find('.', start);
        if (start == std::string::npos) return 0;
        ++start;
    }
    return std::atoi(v.c_str() + start);
}

}  // namespace

nvinfer1::IRuntime* nvinfer1::createInferRuntime(ILogger& logger) noexcept { return new FakeRuntime(logger); }
extern "C" int32_t getInferLibMajorVersion() noexcept { return version_part(0); }
extern "C" int32_t getInferLibMinorVersion() noexcept { return version_part(1); }
extern "C" int32_t getInferLibPatchVersion() noexcept { return version_part(2); }
extern "C" int32_t getInferLibBuildVersion() noexcept { return version_part(3); }

std::string fake_report() {
    return "live device=" + std::to_string(live.device) + " pinned=" + std::to_string(live.pinned) +
           " streams=" + std::to_string(live.streams) + " events=" + std::to_string(live.events) +
           " runtimes=" + std::to_string(live.runtimes) + " engines=" + std::to_string(live.engines) +
           " contexts=" + std::to_string(live.contexts) + "\nmade " + std::to_string(made) + "\n" + trace;
}
