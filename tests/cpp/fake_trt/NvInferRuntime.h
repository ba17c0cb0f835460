// A stand-in for TensorRT's runtime API (NvInferRuntime.h): the classes and members the backend calls,
// with the names and signatures both TensorRT 10.3 and 11.x declare (written from their documentation,
// not copied). The real classes forward to an implementation object; these are abstract and fake_trt.cpp
// implements them. Objects are released with delete, as in TensorRT 10 and 11.
#pragma once
#include <cstddef>
#include <cstdint>

#include "cuda_runtime_api.h"

namespace nvinfer1 {

class Dims64 {
public:
    static constexpr int32_t MAX_DIMS{8};
    int32_t nbDims;
    int64_t d[MAX_DIMS];
};
using Dims = Dims64;

enum class DataType : int32_t { kFLOAT = 0, kHALF = 1, kINT8 = 2, kINT32 = 3 };
enum class TensorIOMode : int32_t { kNONE = 0, kINPUT = 1, kOUTPUT = 2 };
enum class OptProfileSelector : int32_t { kMIN = 0, kOPT = 1, kMAX = 2 };
enum class ExecutionContextAllocationStrategy : int32_t { kSTATIC = 0, kON_PROFILE_CHANGE = 1, kUSER_MANAGED = 2 };

class ILogger {
public:
    enum class Severity : int32_t { kINTERNAL_ERROR = 0, kERROR = 1, kWARNING = 2, kINFO = 3, kVERBOSE = 4 };
    virtual void log(Severity severity, const char* msg) noexcept = 0;
    ILogger() = default;
    virtual ~ILogger() = default;
};

class IExecutionContext {
public:
    virtual ~IExecutionContext() noexcept = default;
    virtual bool setInputShape(const char* tensorName, const Dims& dims) noexcept = 0;
    virtual Dims getTensorShape(const char* tensorName) const noexcept = 0;
    virtual bool setTensorAddress(const char* tensorName, void* data) noexcept = 0;
    virtual bool enqueueV3(cudaStream_t stream) noexcept = 0;
};

class ICudaEngine {
public:
    virtual ~ICudaEngine() noexcept = default;
    virtual IExecutionContext* createExecutionContext(
        ExecutionContextAllocationStrategy strategy = ExecutionContextAllocationStrategy::kSTATIC) noexcept = 0;
    virtual int32_t getNbIOTensors() const noexcept = 0;
    virtual const char* getIOTensorName(int32_t index) const noexcept = 0;
    virtual TensorIOMode getTensorIOMode(const char* tensorName) const noexcept = 0;
    virtual DataType getTensorDataType(const char* tensorName) const noexcept = 0;
    virtual Dims getTensorShape(const char* tensorName) const noexcept = 0;
    virtual int32_t getNbOptimizationProfiles() const noexcept = 0;
    virtual Dims getProfileShape(const char* tensorName, int32_t profileIndex,
                                 OptProfileSelector select) const noexcept = 0;
};

class IRuntime {
public:
    virtual ~IRuntime() noexcept = default;
    virtual ICudaEngine* deserializeCudaEngine(const void* blob, std::size_t size) noexcept = 0;
    virtual void setEngineHostCodeAllowed(bool allowed) noexcept = 0;
};

IRuntime* createInferRuntime(ILogger& logger) noexcept;

}  // namespace nvinfer1

extern "C" int32_t getInferLibMajorVersion() noexcept;
extern "C" int32_t getInferLibMinorVersion() noexcept;
extern "C" int32_t getInferLibPatchVersion() noexcept;
extern "C" int32_t getInferLibBuildVersion() noexcept;
