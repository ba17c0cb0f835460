"""The simulator of tests/trt/fakes.py against facts of the real APIs (each test names its source),
so that the backend tests that rely on it rely on CUDA's and TensorRT's behaviour, not ours."""

import ctypes
import json
import types
from pathlib import Path

import numpy as np
import pytest
from fakes import FakeGpu, NotModelled, UndefinedBehaviour

API_NAMES = Path(__file__).resolve().parents[3] / "shared" / "tools" / "tensorrt_python_api.json"
RELEASES = {"10.3.0.30": "10.3", "11.1.0": "11.1"}


def ok(result):
    assert int(result[0]) == 0, result
    return result[1] if len(result) == 2 else None


def host_array(cudart, ptr, n):
    return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(n,))


# ---------------------------------------------------------------- enums, names


@pytest.mark.parametrize("version, values", [
    # NvInfer.h release/10.3: kEXPLICIT_BATCH = 0 (deprecated), kSTRONGLY_TYPED = 1; kVERSION_COMPATIBLE = 13.
    ("10.3.0.30", {"NetworkDefinitionCreationFlag.STRONGLY_TYPED": 1, "NetworkDefinitionCreationFlag.EXPLICIT_BATCH": 0,
                   "BuilderFlag.VERSION_COMPATIBLE": 13, "BuilderFlag.FP16": 0,
                   "HardwareCompatibilityLevel.AMPERE_PLUS": 1,
                   "TensorIOMode.INPUT": 1, "TensorIOMode.OUTPUT": 2, "DataType.FLOAT": 0, "DataType.HALF": 1,
                   "MemoryPoolType.WORKSPACE": 0}),
    # NvInfer.h main (11.1): kSTRONGLY_TYPED = 0 (deprecated, always on), kVERSION_COMPATIBLE = 12,
    # NvInferRuntime.h: kSAME_COMPUTE_CAPABILITY = 2.
    ("11.1.0", {"NetworkDefinitionCreationFlag.STRONGLY_TYPED": 0, "BuilderFlag.VERSION_COMPATIBLE": 12,
                "HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY": 2, "TensorIOMode.INPUT": 1,
                "DataType.FLOAT": 0, "MemoryPoolType.WORKSPACE": 0}),
])
def test_enum_values_are_each_releases(version, values):
    trt = FakeGpu(version).tensorrt
    for name, value in values.items():
        enum_name, member = name.split(".")
        assert int(getattr(getattr(trt, enum_name), member)) == value, name


@pytest.mark.parametrize("version, absent", [
    ("10.3.0.30", ["HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY"]),  # added in 10.9
    ("11.1.0", ["BuilderFlag.FP16", "BuilderFlag.INT8", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH"]),
])
def test_members_a_release_lacks_are_absent(version, absent):
    trt = FakeGpu(version).tensorrt
    for name in absent:
        enum_name, member = name.split(".")
        assert not hasattr(getattr(trt, enum_name), member), name


@pytest.mark.skipif(not API_NAMES.is_file(), reason="the TensorRT name table (../shared/tools) is not here")
@pytest.mark.parametrize("version", RELEASES)
def test_every_name_the_simulator_has_exists_in_that_release(version):
    """Names from TensorRT's Python bindings sources, per release (shared/tools/tensorrt_python_api.json)."""
    real = json.loads(API_NAMES.read_text())[RELEASES[version]]
    trt = FakeGpu(version).tensorrt
    for cls, members in real.items():
        fake = getattr(trt, cls, None)
        if cls == "<module>" or fake is None:
            continue
        own = {m for m in vars(fake) if not m.startswith("_")} if not hasattr(fake, "__members__") \
            else set(fake.__members__)
        assert own <= set(members) | {"Severity", "messages", "min_severity"}, (cls, own - set(members))
    public = {n for n in vars(trt) if not n.startswith("_")}
    assert public <= set(real) | set(real["<module>"]), public - set(real) - set(real["<module>"])
    enums = ["NetworkDefinitionCreationFlag", "BuilderFlag", "HardwareCompatibilityLevel", "TensorIOMode",
             "DataType", "MemoryPoolType"]
    for name in enums:  # and every real member is there
        assert set(getattr(trt, name).__members__) == set(real[name]), name


def test_cuda_enum_values():
    """cuda-bindings 12.9 cyruntime_types.pxi."""
    cudart = FakeGpu().cudart
    assert [int(getattr(cudart.cudaError_t, n)) for n in (
        "cudaSuccess", "cudaErrorInvalidValue", "cudaErrorMemoryAllocation", "cudaErrorInvalidResourceHandle",
        "cudaErrorNotReady", "cudaErrorIllegalAddress")] == [0, 1, 2, 400, 600, 700]
    kinds = cudart.cudaMemcpyKind
    assert [int(kinds.cudaMemcpyHostToDevice), int(kinds.cudaMemcpyDeviceToHost)] == [1, 2]


# ---------------------------------------------------------------- CUDA memory and streams


def test_async_copies_run_only_when_synchronized():
    gpu = FakeGpu()
    cudart = gpu.cudart
    stream, event = ok(cudart.cudaStreamCreate()), ok(cudart.cudaEventCreate())
    dev, pinned = ok(cudart.cudaMalloc(16)), ok(cudart.cudaMallocHost(16))
    host = host_array(cudart, pinned, 4)
    assert gpu.view(dev, 16, device_access=False) is None  # the host cannot read device memory
    host[:] = 1
    ok(cudart.cudaMemcpyAsync(dev, pinned, 16, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
    host[:] = 2  # pinned: the copy reads the buffer when it runs, after this
    ok(cudart.cudaEventRecord(event, stream))
    ok(cudart.cudaMemcpyAsync(pinned, dev, 8, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))
    assert int(cudart.cudaEventQuery(event)[0]) == 600  # cudaErrorNotReady
    ok(cudart.cudaEventSynchronize(event))  # runs the upload only
    host[:] = 3
    ok(cudart.cudaStreamSynchronize(stream))
    np.testing.assert_array_equal(host, [2, 2, 3, 3])
    for free in (cudart.cudaFree(dev), cudart.cudaFreeHost(pinned), cudart.cudaEventDestroy(event),
                 cudart.cudaStreamDestroy(stream)):
        ok(free)
    assert not any(gpu.live().values())


def test_pageable_copies_follow_cudas_synchronization_rules():
    """CUDA runtime API, "API synchronization behavior": pageable to device is staged at the call;
    device to pageable returns once the copy is done."""
    gpu = FakeGpu()
    cudart = gpu.cudart
    stream, dev = ok(cudart.cudaStreamCreate()), ok(cudart.cudaMalloc(16))
    src = np.full(4, 5, np.float32)
    ok(cudart.cudaMemcpyAsync(dev, src.ctypes.data, 16, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
    src[:] = 6  # staged already: the device gets 5
    dst = np.zeros(4, np.float32)
    ok(cudart.cudaMemcpyAsync(dst.ctypes.data, dev, 16, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))
    np.testing.assert_array_equal(dst, 5)  # done at return, without a synchronize


def test_fresh_device_memory_is_garbage():
    gpu = FakeGpu()
    cudart = gpu.cudart
    stream, dev, pinned = ok(cudart.cudaStreamCreate()), ok(cudart.cudaMalloc(16)), ok(cudart.cudaMallocHost(16))
    ok(cudart.cudaMemcpyAsync(pinned, dev, 16, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))
    ok(cudart.cudaStreamSynchronize(stream))
    assert np.isnan(host_array(cudart, pinned, 4)).all()


def test_misuse_returns_cudas_error_codes():
    gpu = FakeGpu(fail_at=3)
    cudart = gpu.cudart
    dev, pinned = ok(cudart.cudaMalloc(16)), ok(cudart.cudaMallocHost(16))
    assert cudart.cudaMalloc(16) == (cudart.cudaError_t.cudaErrorMemoryAllocation, None)  # (error, None)
    assert int(cudart.cudaFree(pinned)[0]) == 1  # cudaFree of a host pointer: cudaErrorInvalidValue
    ok(cudart.cudaFree(dev))
    assert int(cudart.cudaFree(dev)[0]) == 1  # freed before
    ok(cudart.cudaFree(0))  # "If devPtr is 0, no operation is performed"
    event = ok(cudart.cudaEventCreate())
    ok(cudart.cudaEventSynchronize(event))  # never recorded: returns at once
    ok(cudart.cudaEventDestroy(event))
    assert int(cudart.cudaEventDestroy(event)[0]) == 400  # cudaErrorInvalidResourceHandle
    assert gpu.live() == {"device": 0, "pinned": 1, "stream": 0, "event": 0, "engine": 0, "context": 0}


def test_undefined_behaviour_raises():
    gpu = FakeGpu()
    cudart = gpu.cudart
    stream, dev, pinned = ok(cudart.cudaStreamCreate()), ok(cudart.cudaMalloc(16)), ok(cudart.cudaMallocHost(16))
    with pytest.raises(UndefinedBehaviour, match="HostToDevice with a device source"):
        cudart.cudaMemcpyAsync(pinned, dev, 16, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream)
    with pytest.raises(UndefinedBehaviour, match="runs past"):
        cudart.cudaMemcpyAsync(dev, pinned, 32, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream)
    ok(cudart.cudaMemcpyAsync(dev, pinned, 16, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
    with pytest.raises(UndefinedBehaviour, match="queued work"):
        cudart.cudaFree(dev)
    with pytest.raises(NotModelled, match="default stream"):
        cudart.cudaMemcpyAsync(dev, pinned, 16, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, 0)


# ---------------------------------------------------------------- TensorRT


def model(bundle):
    """The stage graphs' sizes (the bundle's manifest): pixels takes ws (N, num_ws, w_dim),
    cols (N, B, C, h, R) and rows (N, B, C, w, R) and gives img (N, channels, h, w)."""
    m = json.loads((bundle / "manifest.json").read_text())["model"]
    return types.SimpleNamespace(ws=(m["num_ws"], m["w_dim"]), B=m["num_blocks"], C=m["biline_channels"],
                                 R=m["rank"], channels=m["img_channels"], z=m["z_dim"])


def pixel_shapes(bundle, h, w):
    m = model(bundle)
    return {"ws": (1, *m.ws), "cols": (1, m.B, m.C, h, m.R), "rows": (1, m.B, m.C, w, m.R)}


def pixels_engine(gpu, bundle, tile=(8, 8), **flags):
    """The test bundle's pixels graph built through the simulated TensorRT API, as TensorRT's
    samples do it (network, parser, one profile, config), and deserialized."""
    trt = gpu.tensorrt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt.OnnxParser(network, logger).parse_from_file(str(bundle / "pixels.onnx"))
    config, profile = builder.create_builder_config(), builder.create_optimization_profile()
    h, w = tile
    low, high = pixel_shapes(bundle, 1, 1), pixel_shapes(bundle, h, w)
    for name in high:
        profile.set_shape(name, low[name] if name != "ws" else high[name], high[name], high[name])
    assert config.add_optimization_profile(profile) == 0
    for flag in flags.get("builder_flags", ()):
        config.set_flag(flag)
    plan = builder.build_serialized_network(network, config)
    runtime = trt.Runtime(logger)
    runtime.engine_host_code_allowed = flags.get("host_code", False)
    return runtime.deserialize_cuda_engine(memoryview(plan)), logger


def test_a_context_refuses_what_tensorrt_refuses(bundle):
    gpu = FakeGpu()
    engine, logger = pixels_engine(gpu, bundle)
    context = engine.create_execution_context()
    m = model(bundle)
    assert tuple(engine.get_tensor_shape("cols")) == (-1, m.B, m.C, -1, m.R)  # runtime dimensions are -1
    assert tuple(context.get_tensor_shape("img")) == (-1, m.channels, -1, -1)  # not known before the inputs'
    assert context.set_input_shape("cols", pixel_shapes(bundle, 9, 1)["cols"]) is False  # outside the profile
    assert context.set_input_shape("cols", (1, m.B, m.C, 8)) is False  # wrong rank
    assert context.set_input_shape("cols", (1, m.B + 1, m.C, 8, m.R)) is False  # a static dimension changed
    assert context.set_input_shape("img", (1, m.channels, 8, 8)) is False  # not an input
    assert context.set_tensor_address("cols", 0x1000 + 64) is False  # not 256-byte aligned
    assert context.set_tensor_address("nope", 0x1000) is False
    assert all(severity == gpu.tensorrt.Logger.ERROR for severity, _ in logger.messages) and len(logger.messages) == 6
    stream = ok(gpu.cudart.cudaStreamCreate())
    assert context.execute_async_v3(stream) is False  # no input shapes, no addresses
    for name, shape in pixel_shapes(bundle, 5, 7).items():
        assert context.set_input_shape(name, shape)
    assert tuple(context.get_tensor_shape("img")) == (1, m.channels, 5, 7)  # from ONNX Runtime
    assert context.execute_async_v3(stream) is False  # still no addresses


def test_a_kernel_on_pageable_memory_is_an_illegal_address(bundle):
    gpu = FakeGpu()
    engine, _ = pixels_engine(gpu, bundle)
    context = engine.create_execution_context()
    cudart = gpu.cudart
    stream = ok(cudart.cudaStreamCreate())
    buffers = {n: np.zeros(4096, np.float32) for n in ("ws", "cols", "rows", "img")}
    for name, shape in pixel_shapes(bundle, 5, 7).items():
        context.set_input_shape(name, shape)
    for name, array in buffers.items():
        assert context.set_tensor_address(name, (array.ctypes.data + 255) // 256 * 256)
    assert context.execute_async_v3(stream) is True  # enqueued: the fault comes when it runs
    assert int(cudart.cudaStreamSynchronize(stream)[0]) == 700  # cudaErrorIllegalAddress
    assert int(cudart.cudaMalloc(16)[0]) == 700  # sticky


def test_deserialization_refuses_as_tensorrt_does(bundle):
    gpu = FakeGpu()
    trt = gpu.tensorrt
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    assert runtime.deserialize_cuda_engine(b"not an engine") is None
    assert runtime.engine_host_code_allowed is False  # IRuntime: "The default value is false."
    engine, _ = pixels_engine(gpu, bundle, builder_flags=[trt.BuilderFlag.VERSION_COMPATIBLE])
    assert engine is None  # version-compatible: host code not allowed
    engine, _ = pixels_engine(gpu, bundle, builder_flags=[trt.BuilderFlag.VERSION_COMPATIBLE], host_code=True)
    assert engine is not None
    other = FakeGpu("10.4.0.26")  # an engine of another release does not deserialize (not version-compatible)
    logger = other.tensorrt.Logger(other.tensorrt.Logger.WARNING)
    builder = gpu.tensorrt.Builder(logger)
    network = builder.create_network(1 << int(gpu.tensorrt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    gpu.tensorrt.OnnxParser(network, logger).parse_from_file(str(bundle / "mapping.onnx"))
    config, profile = builder.create_builder_config(), builder.create_optimization_profile()
    z = model(bundle).z
    profile.set_shape("z", (1, z), (1, z), (2, z))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    assert other.tensorrt.Runtime(logger).deserialize_cuda_engine(plan) is None
    assert gpu.tensorrt.Runtime(logger).deserialize_cuda_engine(plan) is not None


def test_engines_and_contexts_are_counted_and_a_context_keeps_its_engine(bundle):
    gpu = FakeGpu()
    engine, _ = pixels_engine(gpu, bundle)
    context = engine.create_execution_context()
    assert gpu.live()["engine"] == 1 and gpu.live()["context"] == 1
    del engine  # the context keeps it (pybind keep_alive, as the bindings do)
    assert gpu.live()["engine"] == 1
    del context
    assert gpu.live()["engine"] == 0 and gpu.live()["context"] == 0


def test_a_build_without_a_profile_for_a_dynamic_input_fails(bundle):
    gpu = FakeGpu()
    trt = gpu.tensorrt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    trt.OnnxParser(network, logger).parse_from_file(str(bundle / "mapping.onnx"))
    config = builder.create_builder_config()
    assert config.add_optimization_profile(builder.create_optimization_profile()) == -1  # empty: invalid
    assert builder.build_serialized_network(network, config) is None
    with pytest.raises(NotModelled, match="weakly typed"):
        builder.build_serialized_network(builder.create_network(0), config)
    with pytest.raises(TypeError):
        config.set_memory_pool_limit(0, 1 << 20)  # pybind refuses an int for an enum


def test_destroying_a_context_with_work_queued_is_undefined_behaviour(bundle):
    """TensorRT: releasing what enqueueV3 uses before the stream is synchronized is undefined."""
    gpu = FakeGpu()
    engine, _ = pixels_engine(gpu, bundle)
    context = engine.create_execution_context()
    cudart = gpu.cudart
    stream = ok(cudart.cudaStreamCreate())
    for name, shape in pixel_shapes(bundle, 5, 7).items():
        context.set_input_shape(name, shape)
    for name in ("ws", "cols", "rows", "img"):
        assert context.set_tensor_address(name, ok(cudart.cudaMalloc(4096 * 4)))
    assert context.execute_async_v3(stream)
    del context
    with pytest.raises(UndefinedBehaviour, match="context was destroyed"):
        cudart.cudaStreamSynchronize(stream)
