"""Stand-ins for TensorRT and cuda-python, implementing only the calls docs/tensorrt.md lists.

"Device" memory is host memory (numpy), copies are memmoves, and an "engine" is JSON
naming its stage's ONNX graph and profile, evaluated with ONNX Runtime between the
uploads and downloads. The fake builder writes such engines and records what it was
asked for (network flags, workspace, profiles, timing cache, compatibility).

Resources are counted as CUDA hands them out: device and pinned blocks, streams and
events, each freed only by its own call (cudaFree of a pinned block, a double free or a
stale handle is cudaErrorInvalidValue, as in CUDA), and `fail_at` makes the n-th
allocation fail with cudaErrorMemoryAllocation. As TensorRT does (IRuntime
setEngineHostCodeAllowed, default false), the fake runtime refuses to deserialize a
version-compatible engine, which embeds the lean runtime's host code, unless
`engine_host_code_allowed` is set, and returns None for bytes that are not an engine.
"""

import ctypes
import enum
import functools
import json
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort

from creps.export.trt_plan import output_shapes

class FakeTensor:
    def __init__(self, value: onnx.ValueInfoProto):
        self.name = value.name
        self.shape = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]


class FakeNetwork:
    def __init__(self, flags):
        self.flags, self.inputs, self.graph = flags, [], None

    @property
    def num_inputs(self):
        return len(self.inputs)

    def get_input(self, i):
        return self.inputs[i]


class FakeParser:
    def __init__(self, network, logger):
        self.network, self.num_errors = network, 0

    def parse_from_file(self, path):
        try:
            model = onnx.load(path)
        except Exception:
            self.num_errors = 1
            return False
        self.network.graph = path
        self.network.inputs = [FakeTensor(v) for v in model.graph.input]
        return True

    def get_error(self, i):
        return SimpleNamespace(desc=lambda: "not an ONNX file")


class FakeCache:
    def __init__(self, data: bytes):
        self.data = data

    def serialize(self):
        return self.data + b"+timed"


class FakeConfig:
    def __init__(self):
        self.workspace, self.profiles, self.flags, self.cache = None, [], [], None
        self.hardware_compatibility_level = "none"

    def set_memory_pool_limit(self, pool, size):
        assert pool == "workspace"
        self.workspace = size

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)

    def create_timing_cache(self, data):
        return FakeCache(bytes(data))

    def set_timing_cache(self, cache, ignore_mismatch):
        self.cache = cache

    def set_flag(self, flag):
        self.flags.append(flag)


class FakeProfile(dict):
    def set_shape(self, name, low, opt, high):
        self[name] = {"min": list(low), "opt": list(opt), "max": list(high)}


class FakeBuilder:
    def __init__(self, logger):
        pass

    def create_network(self, flags):
        return FakeNetwork(flags)

    def create_builder_config(self):
        return FakeConfig()

    def create_optimization_profile(self):
        return FakeProfile()

    def build_serialized_network(self, network, config):
        stage = network.graph.rsplit("/", 1)[-1].split(".")[0]
        return json.dumps({"graph": network.graph, "stage": stage, "model": FakeTrt.model,
                           "profile": dict(config.profiles[0]), "network_flags": network.flags,
                           "workspace": config.workspace, "flags": config.flags, "cache": config.cache.data.decode(),
                           "hardware": config.hardware_compatibility_level}).encode()


GPU = SimpleNamespace(name=b"Fake GPU\0\0", major=8, minor=7)


class Err(enum.IntEnum):  # cudaError_t values of the CUDA runtime API
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2


KINDS = ("device", "pinned", "stream", "event")


class FakeCudart:
    """cuda.bindings.runtime's calls as (error, *values) tuples; memory is numpy-backed."""

    cudaError_t = Err
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self, fail_at: int | None = None):
        self.held = {kind: {} for kind in KINDS}  # handle -> backing block (None for streams, events)
        self.allocations = 0  # every allocation asked for, failed ones included
        self.fail_at = fail_at  # the allocation (1-based) that fails with cudaErrorMemoryAllocation
        self.copies, self.calls = [], []

    def live(self) -> dict[str, int]:
        """What is allocated and not yet freed, per kind."""
        return {kind: len(handles) for kind, handles in self.held.items()}

    def _allocate(self, kind, size=None):
        self.calls.append(f"allocate {kind}")
        self.allocations += 1
        if self.allocations == self.fail_at:
            return Err.cudaErrorMemoryAllocation, 0
        if size is None:  # a stream or an event: an opaque handle
            backing = handle = object()
            key = id(handle)
        else:
            backing = np.zeros(size, np.uint8)
            handle = key = backing.ctypes.data
        self.held[kind][key] = backing
        return Err.cudaSuccess, handle

    def _release(self, kind, handle):
        self.calls.append(f"free {kind}")
        key = int(handle) if kind in ("device", "pinned") else id(handle)
        if key not in self.held[kind]:
            return (Err.cudaErrorInvalidValue,)
        del self.held[kind][key]
        return (Err.cudaSuccess,)

    def cudaMalloc(self, size):
        return self._allocate("device", size)

    def cudaMallocHost(self, size):
        return self._allocate("pinned", size)

    def cudaStreamCreate(self):
        return self._allocate("stream")

    def cudaEventCreate(self):
        return self._allocate("event")

    def cudaFree(self, ptr):
        return self._release("device", ptr)

    def cudaFreeHost(self, ptr):
        return self._release("pinned", ptr)

    def cudaStreamDestroy(self, stream):
        return self._release("stream", stream)

    def cudaEventDestroy(self, event):
        return self._release("event", event)

    def cudaStreamSynchronize(self, stream):
        self.calls.append("cudaStreamSynchronize")
        return (Err.cudaSuccess,) if id(stream) in self.held["stream"] else (Err.cudaErrorInvalidValue,)

    def cudaMemcpyAsync(self, dst, src, size, kind, stream):
        ctypes.memmove(int(dst), int(src), size)
        self.copies.append((kind, size))
        return (Err.cudaSuccess,)

    def cudaGetErrorString(self, err):
        return Err.cudaSuccess, Err(err).name.encode()

    cudaGetDeviceCount = staticmethod(lambda: (Err.cudaSuccess, 1))
    cudaGetDevice = staticmethod(lambda: (Err.cudaSuccess, 0))
    cudaGetDeviceProperties = staticmethod(lambda device: (Err.cudaSuccess, GPU))
    cudaEventSynchronize = cudaEventRecord = staticmethod(lambda *a: (Err.cudaSuccess,))


class FakeContext:
    def __init__(self, engine):
        self.engine, self.shapes, self.addresses = engine, {}, {}

    def set_input_shape(self, name, shape):
        low, _, high = self.engine.get_tensor_profile_shape(name, 0) if name in self.engine.profile else [shape] * 3
        if not all(lo <= d <= hi for d, lo, hi in zip(shape, low, high)):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        if name in self.engine.inputs:
            return self.shapes[name]
        return output_shapes(self.engine.model, self.engine.stage, self.shapes)[name]

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def view(self, name):
        shape = self.get_tensor_shape(name)
        buffer = (ctypes.c_float * int(np.prod(shape))).from_address(self.addresses[name])
        return np.frombuffer(buffer, np.float32).reshape(shape)

    def execute_async_v3(self, stream):
        feeds = {name: self.view(name).copy() for name in self.engine.inputs}
        for name, value in zip(self.engine.outputs, self.engine.session.run(self.engine.outputs, feeds)):
            self.view(name)[...] = value
        return True


@functools.lru_cache(maxsize=16)
def session(graph: str) -> ort.InferenceSession:
    """One ONNX Runtime session per graph file (tests deserialize the same engines many times)."""
    return ort.InferenceSession(graph, providers=["CPUExecutionProvider"])


class FakeEngine:
    """An 'engine file' is JSON naming the ONNX graph, the stage and the profile."""

    def __init__(self, data: bytes):
        spec = json.loads(data)
        self.stage, self.model, self.profile = spec["stage"], spec["model"], spec["profile"]
        self.session = session(spec["graph"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.static = {i.name: i.shape for i in self.session.get_inputs() if all(isinstance(d, int) for d in i.shape)}
        self.num_io_tensors = len(self.inputs) + len(self.outputs)

    def get_tensor_name(self, i):
        return (self.inputs + self.outputs)[i]

    def get_tensor_mode(self, name):
        return FakeTrt.TensorIOMode.INPUT if name in self.inputs else FakeTrt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return FakeTrt.DataType.FLOAT

    def get_tensor_shape(self, name):
        return self.static.get(name) or [-1]

    def get_tensor_profile_shape(self, name, index):
        shapes = self.profile[name]
        return [shapes["min"], shapes["opt"], shapes["max"]]

    def create_execution_context(self):
        return FakeContext(self)


class FakeTrt:
    __version__ = "10.3.0.30"
    model = None  # the bundle's model section, set by the test before a fake build
    TensorIOMode = SimpleNamespace(INPUT="in", OUTPUT="out")
    DataType = SimpleNamespace(FLOAT="f32")
    NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=0)
    MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
    BuilderFlag = SimpleNamespace(VERSION_COMPATIBLE="version_compatible")
    HardwareCompatibilityLevel = SimpleNamespace(AMPERE_PLUS="ampere_plus")
    Builder = FakeBuilder
    OnnxParser = FakeParser

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Runtime:
        def __init__(self, logger):
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, data):
            """None where TensorRT logs an error and returns null: not an engine, or host code not allowed."""
            try:
                spec = json.loads(bytes(data))
            except ValueError:
                return None
            if FakeTrt.BuilderFlag.VERSION_COMPATIBLE in spec.get("flags", []) and not self.engine_host_code_allowed:
                return None
            return FakeEngine(data)
