"""A simulator of one NVIDIA GPU as cuda-python's runtime module and TensorRT's Python API see it.

Written from the real APIs, not from creps: TensorRT's public headers (NVIDIA/TensorRT
release/10.3 and main = 11.1: include/NvInfer.h, NvInferRuntime.h, NvInferRuntimeBase.h),
its Python bindings (python/src/infer/pyCore.cpp; the tensorrt-cu12-bindings 10.3.0 and
11.4.0.106 wheels' docstrings) and cuda-bindings 12.9 (runtime.pyx, cyruntime_types.pxi).
It imports no creps code; tests/trt/test_fakes.py checks it against those facts.

CUDA (`FakeGpu.cudart`, a stand-in for `cuda.bindings.runtime`):
- Every call returns cuda-python's tuple (cudaError_t, *values); a failed allocation
  returns (error, None). The n-th allocation of any resource (`fail_at`) fails with
  cudaErrorMemoryAllocation. An illegal address met by a kernel or copy is sticky, as in
  CUDA: every later call returns cudaErrorIllegalAddress.
- Device memory lives at addresses no host code can read (above 2**52) and starts as
  0xFF bytes (float NaN): a missing upload reads garbage. Pinned host memory
  (cudaMallocHost, cudaHostAlloc) is real host memory, page aligned, and device
  accessible (UVA), as in CUDA. Any other host address is pageable.
- A stream queues its copies, kernels and event records and runs them only when the
  stream or an event recorded on it is synchronized, or, after `interleave(seed)`, also a random
  number of them at every call (a random legal interleaving: in order per stream).
  Copies touching pinned memory read and write it when they run, so host code that
  writes a pinned buffer before its earlier upload ran, or reads one before the download
  ran, sees the wrong data. Copies from pageable memory follow CUDA's documented
  "API synchronization behavior": host to device stages the source at the call (the host
  buffer may be reused at once); device to pageable host returns only once the copy is
  done (the stream up to it runs at the call).
- cudaEventSynchronize of a never-recorded event returns at once (CUDA's rule).
- Undefined behaviour raises UndefinedBehaviour: freeing memory or destroying a TensorRT
  context that queued work still uses (TensorRT: "modifying or releasing memory ...
  registered for the tensors before stream synchronization results in undefined
  behavior"; stricter than CUDA's cudaFree, which may synchronize implicitly), a copy
  whose pointers do not match its kind, a copy out of its allocation's bounds.
- Not modelled (raises NotModelled, or AttributeError for a function not written):
  the legacy default stream, multiple devices, flags other than the default ones.

TensorRT (`FakeGpu.tensorrt`, a module for sys.modules["tensorrt"], one release chosen
by `tensorrt_version`):
- Enums with each release's members and values (RELEASES); 11.x has no FP16/INT8
  builder flags and STRONGLY_TYPED = 0 (deprecated, always on); 10.3 builds only
  strongly typed networks here (a weakly typed one raises NotModelled).
- An "engine" is the ONNX graph with a header (release, flags, profiles, GPU); its
  kernel runs the graph with ONNX Runtime on the bytes at the tensor addresses, read
  and written as each tensor's dtype. Output shapes come from ONNX Runtime running the
  graph (zeros of the input shapes), never from creps.
- Calls return what the real ones return on misuse, and log an error on the Logger:
  set_input_shape False (not an input, wrong rank, a static dimension changed, outside
  profile 0), set_tensor_address False (not a tensor, not 256-byte aligned),
  execute_async_v3 False (an input shape or an address not set), set_timing_cache False
  (a cache from another GPU without ignore_mismatch), add_optimization_profile -1,
  build_serialized_network None (a dynamic input without a profile), deserialize None
  (not an engine, another release, another GPU, host code not allowed),
  create_execution_context None (its allocation failed).
- Engines and contexts are counted live as Python frees them; a context keeps its
  engine alive and an engine its runtime (pybind keep_alive, as the bindings do).
"""

from __future__ import annotations

import bisect
import ctypes
import enum
import itertools
import hashlib
import json
import operator
import threading
import types
import weakref
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort


class NotModelled(NotImplementedError):
    """A call or an argument the simulator does not model (so a test cannot pass by accident)."""


class UndefinedBehaviour(AssertionError):
    """Misuse that CUDA or TensorRT documents as undefined behaviour."""


# ---------------------------------------------------------------- CUDA (cuda-bindings 12.9)

class cudaError_t(enum.IntEnum):  # cyruntime_types.pxi
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInvalidDevicePointer = 17
    cudaErrorNoDevice = 100
    cudaErrorInvalidResourceHandle = 400
    cudaErrorNotReady = 600
    cudaErrorIllegalAddress = 700


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


OK = cudaError_t.cudaSuccess
DEVICE_BASE = 1 << 52  # not a host address on any 64-bit OS
DEVICE_ALIGN, PAGE = 256, 4096


class Handle:
    """cudaStream_t / cudaEvent_t: an opaque handle with __int__ and __index__ (as cuda-python's)."""

    def __init__(self, value: int):
        self._value = value

    def __int__(self):
        return self._value

    __index__ = __int__

    def getPtr(self):
        return self._value


@dataclass
class Block:
    kind: str  # "device" or "pinned"
    addr: int
    data: np.ndarray  # uint8 backing store

    @property
    def end(self):
        return self.addr + self.data.size


@dataclass(eq=False)
class Op:
    """One queued piece of stream work; `ranges` are the (addr, size) it touches."""

    what: str
    run: object
    ranges: list = field(default_factory=list)
    context: int | None = None  # the serial number of the TensorRT context a kernel came from
    done: bool = False


class FakeGpu:
    """One simulated GPU: its memory, streams, events and live TensorRT objects."""

    def __init__(self, tensorrt_version: str = "10.3.0.30", fail_at: int | None = None, name: str = "Fake GPU",
                 compute_capability: tuple[int, int] = (8, 7)):
        self.name, self.compute_capability = name, compute_capability
        self.present = True  # False: a machine whose driver sees no GPU
        self.rng = None  # see interleave
        self.fail_at = fail_at  # the allocation (1-based, any kind) that fails
        self.allocations = 0  # every allocation asked for, failed ones included
        self.calls: list[str] = []  # cudart calls, in order
        self.copies: list[tuple[int, int]] = []  # (kind, bytes) of every cudaMemcpyAsync
        self.sticky: cudaError_t | None = None
        self._blocks: dict[int, Block] = {}
        self._starts: list[int] = []
        self._next_device = DEVICE_BASE
        self._streams: dict[int, deque] = {}
        self._events: dict[int, Op | None] = {}  # event -> its last record op (None: never recorded)
        self._handles = 0x1000
        self._objects = {"engine": 0, "context": 0}
        self.destroyed_contexts: set[int] = set()
        # TensorRT calls that fail as on an internal error (out of memory, a CUDA error):
        # they log an error and return False, None or -1, as the real ones do then.
        self.refuse: set[str] = set()
        # Tensors the builder gives another dtype, by name ("HALF"), as for a graph with FP16 IO.
        self.io_dtypes: dict[str, str] = {}
        self.serials = itertools.count(1)
        # One lock around the simulator's state (every cudart call, every enqueue): contexts on
        # different streams are independent on a real GPU; here their work runs one call at a time.
        self.lock = threading.RLock()
        self.cudart = _cudart(self)
        self.tensorrt = tensorrt_module(tensorrt_version, self)

    def interleave(self, seed: int):
        """From now on the device also runs a random number of queued items at every call."""
        self.rng = np.random.default_rng(seed)

    # -- bookkeeping
    def live(self) -> dict[str, int]:
        """What is allocated and not yet freed, per kind."""
        blocks = [b.kind for b in self._blocks.values()]
        return {"device": blocks.count("device"), "pinned": blocks.count("pinned"), "stream": len(self._streams),
                "event": len(self._events), **self._objects}

    def allocate(self) -> bool:
        """Count one allocation; False when it is the one `fail_at` makes fail."""
        self.allocations += 1
        return self.allocations != self.fail_at

    def _handle(self) -> int:
        self._handles += 16
        return self._handles

    def block_at(self, addr: int, size: int = 1) -> Block | None:
        """The allocation holding [addr, addr + size), or None."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i < 0:
            return None
        block = self._blocks[self._starts[i]]
        return block if addr + size <= block.end else None

    def _add_block(self, block: Block):
        self._blocks[block.addr] = block
        bisect.insort(self._starts, block.addr)

    def _remove_block(self, block: Block):
        self._check_unused(block.addr, block.data.size, f"freeing {block.kind} memory")
        del self._blocks[block.addr]
        self._starts.remove(block.addr)

    def _check_unused(self, addr, size, what):
        for queue in self._streams.values():
            for op in queue:
                if any(a < addr + size and addr < a + n for a, n in op.ranges):
                    raise UndefinedBehaviour(f"{what} that queued work ({op.what}) still uses")

    def view(self, addr: int, size: int, device_access: bool) -> np.ndarray | None:
        """Bytes at [addr, addr+size): device memory, pinned memory, or (host access only) pageable memory."""
        block = self.block_at(addr, size)
        if block is not None:
            if block.kind == "device" and not device_access:
                return None  # the host cannot dereference device memory
            return block.data[addr - block.addr:addr - block.addr + size]
        if device_access or addr >= DEVICE_BASE:
            return None  # pageable memory is not device accessible
        return np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(addr))

    # -- streams
    def stream_queue(self, stream) -> deque:
        if stream is None or operator.index(stream) == 0:
            raise NotModelled("the legacy default stream")
        queue = self._streams.get(operator.index(stream))
        if queue is None:
            raise UndefinedBehaviour("work enqueued on a stream that does not exist (destroyed?)")
        return queue

    def enqueue(self, stream, op: Op):
        with self.lock:
            self.stream_queue(stream).append(op)

    def run_until(self, queue: deque, last: Op | None = None):
        """Run queued work in order, up to and including `last` (everything when None)."""
        while queue:
            op = queue.popleft()
            if op.context is not None and op.context in self.destroyed_contexts:
                raise UndefinedBehaviour(f"{op.what}: its execution context was destroyed before it ran")
            if self.sticky is None:
                op.run()
            op.done = True
            if op is last:
                return

    def wander(self):
        """With a seed: the device runs some of the queued work while the host goes on."""
        if self.rng is None:
            return
        for queue in list(self._streams.values()):
            for _ in range(int(self.rng.integers(0, len(queue) + 1))):
                self.run_until(queue, queue[0])

    def fault(self):
        """An illegal address: sticky, as in CUDA (every later call returns it)."""
        self.sticky = cudaError_t.cudaErrorIllegalAddress


def _cudart(gpu: FakeGpu) -> types.SimpleNamespace:
    """The cudart functions creps uses, as cuda-python's runtime module exposes them."""

    def call(fn):
        def wrapper(*args):
            with gpu.lock:
                return locked(*args)

        def locked(*args):
            gpu.calls.append(fn.__name__)
            if gpu.sticky is not None and fn.__name__ != "cudaGetErrorString":
                return (gpu.sticky,) if fn.__name__ in NO_VALUE else (gpu.sticky, None)
            result = fn(*args)
            gpu.wander()
            return result
        wrapper.__name__ = fn.__name__
        return wrapper

    def cudaGetDeviceCount():
        return (OK, 1) if gpu.present else (cudaError_t.cudaErrorNoDevice, 0)

    def cudaGetDevice():
        return OK, 0

    def cudaGetDeviceProperties(device):
        if device != 0:
            raise NotModelled("more than one device")
        major, minor = gpu.compute_capability
        return OK, types.SimpleNamespace(name=gpu.name.encode().ljust(256, b"\0"), major=major, minor=minor)

    def cudaGetErrorString(err):
        return OK, cudaError_t(err).name.encode()

    def cudaMalloc(size):
        if not gpu.allocate():
            return cudaError_t.cudaErrorMemoryAllocation, None
        addr = gpu._next_device
        gpu._next_device += -(-max(size, 1) // DEVICE_ALIGN) * DEVICE_ALIGN + DEVICE_ALIGN
        gpu._add_block(Block("device", addr, np.full(size, 0xFF, np.uint8)))
        return OK, addr

    def cudaMallocHost(size):
        if not gpu.allocate():
            return cudaError_t.cudaErrorMemoryAllocation, None
        raw = np.full(size + PAGE, 0xFF, np.uint8)
        start = -raw.ctypes.data % PAGE
        block = Block("pinned", raw.ctypes.data + start, raw[start:start + size])
        gpu._add_block(block)
        return OK, block.addr

    def cudaHostAlloc(size, flags):
        if flags != 0:  # cudaHostAllocDefault
            raise NotModelled(f"cudaHostAlloc flags {flags}")
        return cudaMallocHost(size)

    def free(kind, ptr):
        ptr = int(ptr)
        if ptr == 0:
            return (OK,)  # cudaFree(0) / cudaFreeHost(0) do nothing
        block = gpu._blocks.get(ptr)
        if block is None or block.kind != kind:
            return (cudaError_t.cudaErrorInvalidValue,)  # not an allocation of this kind, or freed before
        gpu._remove_block(block)
        return (OK,)

    def cudaFree(ptr):
        return free("device", ptr)

    def cudaFreeHost(ptr):
        return free("pinned", ptr)

    def cudaStreamCreate():
        if not gpu.allocate():
            return cudaError_t.cudaErrorMemoryAllocation, None
        handle = gpu._handle()
        gpu._streams[handle] = deque()
        return OK, Handle(handle)

    def cudaStreamDestroy(stream):
        queue = gpu._streams.get(int(stream))
        if queue is None:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        gpu.run_until(queue)  # CUDA finishes the queued work, then releases the stream
        del gpu._streams[int(stream)]
        return (OK,)

    def cudaStreamSynchronize(stream):
        if stream is None or int(stream) == 0:
            raise NotModelled("the legacy default stream")
        if int(stream) not in gpu._streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        gpu.run_until(gpu._streams[int(stream)])
        return (gpu.sticky or OK,)

    def cudaStreamQuery(stream):
        return (OK if not gpu.stream_queue(stream) else cudaError_t.cudaErrorNotReady,)

    def cudaEventCreate():
        if not gpu.allocate():
            return cudaError_t.cudaErrorMemoryAllocation, None
        handle = gpu._handle()
        gpu._events[handle] = None
        return OK, Handle(handle)

    def cudaEventDestroy(event):
        if int(event) not in gpu._events:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        del gpu._events[int(event)]  # a pending record completes on its own (CUDA's rule)
        return (OK,)

    def cudaEventRecord(event, stream):
        if int(event) not in gpu._events:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        op = Op("event record", lambda: None)
        gpu.enqueue(stream, op)
        gpu._events[int(event)] = op
        return (OK,)

    def cudaEventSynchronize(event):
        if int(event) not in gpu._events:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        op = gpu._events[int(event)]
        if op is not None and not op.done:  # never recorded: returns at once
            queue = next(q for q in gpu._streams.values() if op in q)
            gpu.run_until(queue, op)
        return (gpu.sticky or OK,)

    def cudaEventQuery(event):
        if int(event) not in gpu._events:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        op = gpu._events[int(event)]
        return (OK if op is None or op.done else cudaError_t.cudaErrorNotReady,)

    def cudaMemcpyAsync(dst, src, count, kind, stream):
        dst, src, kind = int(dst), int(src), cudaMemcpyKind(kind)
        gpu.copies.append((int(kind), count))
        queue = gpu.stream_queue(stream)

        def where(addr):
            block = gpu.block_at(addr)
            if block is not None:
                if gpu.block_at(addr, count) is None:
                    raise UndefinedBehaviour(f"a copy of {count} bytes runs past its {block.kind} allocation")
                return block.kind
            if addr >= DEVICE_BASE:
                raise UndefinedBehaviour("a copy from or to freed device memory")
            return "pageable"

        src_at, dst_at = where(src), where(dst)
        direction = {cudaMemcpyKind.cudaMemcpyHostToDevice: ("host", "device"),
                     cudaMemcpyKind.cudaMemcpyDeviceToHost: ("device", "host"),
                     cudaMemcpyKind.cudaMemcpyDeviceToDevice: ("device", "device"),
                     cudaMemcpyKind.cudaMemcpyHostToHost: ("host", "host")}.get(kind)
        if direction is not None:
            got = tuple("device" if at == "device" else "host" for at in (src_at, dst_at))
            if got != direction:
                raise UndefinedBehaviour(f"{kind.name} with a {src_at} source and a {dst_at} destination")
        if src_at == "pageable" and dst_at == "pageable":
            raise NotModelled("host to host copies")
        if src_at == "pageable":  # staged at the call: the host buffer may change at once
            staged = gpu.view(src, count, device_access=False).copy()
            read = lambda: staged  # noqa: E731
        else:
            read = lambda: gpu.view(src, count, device_access=True).copy()  # noqa: E731

        def run():
            gpu.view(dst, count, device_access=dst_at != "pageable")[...] = read()

        ranges = [(a, count) for a, at in ((src, src_at), (dst, dst_at)) if at != "pageable"]
        op = Op(f"copy {kind.name} of {count} bytes", run, ranges)
        queue.append(op)
        if dst_at == "pageable":  # to pageable memory: returns once the copy is done
            gpu.run_until(queue, op)
        return (OK,)

    NO_VALUE = {"cudaFree", "cudaFreeHost", "cudaStreamDestroy", "cudaStreamSynchronize", "cudaStreamQuery",
                "cudaEventDestroy", "cudaEventRecord", "cudaEventSynchronize", "cudaEventQuery", "cudaMemcpyAsync"}
    functions = [cudaGetDeviceCount, cudaGetDevice, cudaGetDeviceProperties, cudaGetErrorString, cudaMalloc,
                 cudaMallocHost, cudaHostAlloc, cudaFree, cudaFreeHost, cudaStreamCreate, cudaStreamDestroy,
                 cudaStreamSynchronize, cudaStreamQuery, cudaEventCreate, cudaEventDestroy, cudaEventRecord,
                 cudaEventSynchronize, cudaEventQuery, cudaMemcpyAsync]
    return types.SimpleNamespace(cudaError_t=cudaError_t, cudaMemcpyKind=cudaMemcpyKind, cudaHostAllocDefault=0,
                                 **{fn.__name__: call(fn) for fn in functions})


# ---------------------------------------------------------------- TensorRT

# Enum members and values per release: release/10.3 and main (11.1) include/ headers; member
# names as the Python bindings spell them (no k prefix). Values are ABI, fixed within a major.
_COMMON = {
    "TensorIOMode": {"NONE": 0, "INPUT": 1, "OUTPUT": 2},
    "MemoryPoolType": {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1, "DLA_LOCAL_DRAM": 2, "DLA_GLOBAL_DRAM": 3,
                       "TACTIC_DRAM": 4, "TACTIC_SHARED_MEMORY": 5},
    "Severity": {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4},
}
_DATA_TYPES_10 = {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4, "UINT8": 5, "FP8": 6, "BF16": 7,
                  "INT64": 8, "INT4": 9}
RELEASES = {
    10: {**_COMMON,
         "NetworkDefinitionCreationFlag": {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1},
         "HardwareCompatibilityLevel": {"NONE": 0, "AMPERE_PLUS": 1},
         "DataType": _DATA_TYPES_10,
         "BuilderFlag": {"FP16": 0, "INT8": 1, "DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5,
                         "TF32": 6, "SPARSE_WEIGHTS": 7, "SAFETY_SCOPE": 8, "OBEY_PRECISION_CONSTRAINTS": 9,
                         "PREFER_PRECISION_CONSTRAINTS": 10, "DIRECT_IO": 11, "REJECT_EMPTY_ALGORITHMS": 12,
                         "VERSION_COMPATIBLE": 13, "EXCLUDE_LEAN_RUNTIME": 14, "FP8": 15,
                         "ERROR_ON_TIMING_CACHE_MISS": 16, "BF16": 17, "DISABLE_COMPILATION_CACHE": 18,
                         "STRIP_PLAN": 19, "WEIGHTLESS": 19, "REFIT_IDENTICAL": 20, "WEIGHT_STREAMING": 21,
                         "INT4": 22, "REFIT_INDIVIDUAL": 23}},
    11: {**_COMMON,
         "NetworkDefinitionCreationFlag": {"STRONGLY_TYPED": 0, "PREFER_JIT_PYTHON_PLUGINS": 1,
                                           "PREFER_AOT_PYTHON_PLUGINS": 2},
         "HardwareCompatibilityLevel": {"NONE": 0, "AMPERE_PLUS": 1, "SAME_COMPUTE_CAPABILITY": 2},
         "DataType": {**_DATA_TYPES_10, "FP4": 10, "E8M0": 11},
         "BuilderFlag": {"DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5, "TF32": 6,
                         "SPARSE_WEIGHTS": 7, "SAFETY_SCOPE": 8, "DIRECT_IO": 11, "VERSION_COMPATIBLE": 12,
                         "EXCLUDE_LEAN_RUNTIME": 13, "ERROR_ON_TIMING_CACHE_MISS": 15, "DISABLE_COMPILATION_CACHE": 17,
                         "STRIP_PLAN": 18, "REFIT_IDENTICAL": 19, "WEIGHT_STREAMING": 20, "REFIT_INDIVIDUAL": 22,
                         "STRICT_NANS": 23, "MONITOR_MEMORY": 24, "EDITABLE_TIMING_CACHE": 26,
                         "DISTRIBUTIVE_INDEPENDENCE": 27}},
}
ORT_TYPES = {"tensor(float)": ("FLOAT", np.float32), "tensor(float16)": ("HALF", np.float16),
             "tensor(int8)": ("INT8", np.int8), "tensor(int32)": ("INT32", np.int32),
             "tensor(int64)": ("INT64", np.int64), "tensor(bool)": ("BOOL", np.bool_),
             "tensor(uint8)": ("UINT8", np.uint8)}
CONTEXT_MEMORY = 1 << 20  # ICudaEngine.device_memory_size_v2: an execution context's activation memory
PLAN_MAGIC, CACHE_MAGIC = b"FAKEPLAN", b"FAKETCACHE"
_SESSIONS: dict[str, ort.InferenceSession] = {}
_OUTPUT_SHAPES: dict[tuple, dict] = {}


def session(onnx_bytes: bytes) -> ort.InferenceSession:
    """One ONNX Runtime session per graph (tests deserialize the same engines many times)."""
    key = hashlib.sha256(onnx_bytes).hexdigest()
    if key not in _SESSIONS:
        _SESSIONS[key] = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return _SESSIONS[key]


def ort_output_shapes(sess: ort.InferenceSession, key: str, shapes: dict) -> dict:
    """Output shapes for these input shapes: ONNX Runtime runs the graph on zeros (cached)."""
    cache_key = (key, tuple(sorted(shapes.items())))
    if cache_key not in _OUTPUT_SHAPES:
        feeds = {i.name: np.zeros(shapes[i.name], ORT_TYPES[i.type][1]) for i in sess.get_inputs()}
        outputs = sess.run(None, feeds)
        _OUTPUT_SHAPES[cache_key] = {o.name: tuple(v.shape) for o, v in zip(sess.get_outputs(), outputs)}
    return _OUTPUT_SHAPES[cache_key]


def read_plan(data: bytes) -> dict:
    """The header of a simulated engine: what its builder was asked for."""
    if not data.startswith(PLAN_MAGIC):
        raise ValueError("not an engine of this simulator")
    return json.loads(data[12:12 + int.from_bytes(data[8:12], "little")])


class Dims(tuple):
    """trt.Dims: a sequence of int (-1 for a dimension known only at run time)."""


def _dims(shape) -> Dims:
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"incompatible function arguments: shape {shape!r} is not a Dims, tuple or list")
    return Dims(operator.index(d) for d in shape)


def non_activation_dequantized(onnx_bytes: bytes) -> str | None:
    """The first DequantizeLinear whose input is an int32 constant: TensorRT dequantizes only
    its activation types (int8, fp8, int4), so its ONNX parser refuses the node."""
    model = onnx.ModelProto.FromString(bytes(onnx_bytes))
    int32 = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT32}
    return next((n.name or n.output[0] for n in model.graph.node
                 if n.op_type == "DequantizeLinear" and n.input[0] in int32), None)


def _graph_io(sess):
    """[(name, mode, dtype name, Dims)] of a graph's inputs then outputs; symbolic axes are -1."""
    def dims(shape):
        return [d if isinstance(d, int) else -1 for d in shape]
    return ([(i.name, "INPUT", ORT_TYPES[i.type][0], dims(i.shape)) for i in sess.get_inputs()]
            + [(o.name, "OUTPUT", ORT_TYPES[o.type][0], dims(o.shape)) for o in sess.get_outputs()])


def tensorrt_module(version: str, gpu: FakeGpu) -> types.ModuleType:
    """A `tensorrt` module of one release (10.x or 11.x) driving `gpu`."""
    major, minor = (int(p) for p in version.split(".")[:2])
    if major not in RELEASES:
        raise NotModelled(f"TensorRT {version}")
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    tables = {k: dict(v) for k, v in RELEASES[major].items()}  # any 10.x: 10.3's members, and
    if major == 10 and minor >= 9:  # kSAME_COMPUTE_CAPABILITY = 2 from 10.9 (NvInferRuntime.h release/10.9)
        tables["HardwareCompatibilityLevel"]["SAME_COMPUTE_CAPABILITY"] = 2
    T = types.SimpleNamespace(**{name: enum.IntEnum(name, members) for name, members in tables.items()})
    for name, value in vars(T).items():
        if name != "Severity":  # ILogger.Severity: an attribute of the logger classes only
            setattr(trt, name, value)

    def typed(value, enum_name):
        if not isinstance(value, getattr(T, enum_name)):
            raise TypeError(f"incompatible function arguments: {value!r} is not a tensorrt.{enum_name}")
        return value

    class Logger:
        Severity = T.Severity
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = (T.Severity(i) for i in range(5))

        def __init__(self, min_severity=T.Severity.WARNING):
            self.min_severity = typed(min_severity, "Severity")
            self.messages: list[tuple] = []

        def log(self, severity, msg):
            self.messages.append((severity, msg))

    def error(logger, msg):
        logger.log(T.Severity.ERROR, msg)

    class ITensor:
        def __init__(self, name, dtype, shape):
            self.name, self.dtype, self.shape = name, getattr(T.DataType, dtype), Dims(shape)

    class INetworkDefinition:
        def __init__(self, flags):
            self.flags, self.onnx, self._inputs, self._outputs = flags, None, [], []

        def get_flag(self, flag):
            return bool(self.flags & (1 << int(typed(flag, "NetworkDefinitionCreationFlag"))))

        @property
        def num_inputs(self):
            return len(self._inputs)

        @property
        def num_outputs(self):
            return len(self._outputs)

        def get_input(self, index):
            return self._inputs[index]

        def get_output(self, index):
            return self._outputs[index]

    class ParserError:
        def __init__(self, desc):
            self._desc = desc

        def desc(self):
            return self._desc

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.logger, self._errors = network, logger, []
            network._parser = self  # keep_alive: the network keeps its parser (it owns the weights)

        @property
        def num_errors(self):
            return len(self._errors)

        def get_error(self, index):
            return self._errors[index]

        def clear_errors(self):
            self._errors.clear()

        def parse_from_file(self, model):
            with open(model, "rb") as f:
                return self.parse(f.read(), model)

        def parse(self, model, path=None):
            refused = non_activation_dequantized(model)
            if refused:  # the real parser's words for it
                self._errors.append(ParserError(f"{refused}: only activation types allowed as input to this layer."))
                return False
            try:
                sess = session(bytes(model))
            except Exception as exc:  # ONNX Runtime's refusal stands for the parser's
                self._errors.append(ParserError(f"failed to parse {path or 'the model'}: {type(exc).__name__}"))
                return False
            self.network.onnx = bytes(model)
            for name, mode, dtype, shape in _graph_io(sess):
                (self.network._inputs if mode == "INPUT" else self.network._outputs).append(ITensor(name, dtype, shape))
            return True

    class IOptimizationProfile:
        def __init__(self):
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, input, min, opt, max):
            low, mid, high = _dims(min), _dims(opt), _dims(max)
            if not (len(low) == len(mid) == len(high)) or not all(a <= b <= c for a, b, c in zip(low, mid, high)):
                raise RuntimeError("Shape provided for min is inconsistent with other shapes.")
            self.shapes[input] = (low, mid, high)

        def get_shape(self, input):
            return list(self.shapes.get(input, ()))

    class IHostMemory(bytes):
        """Serialized data: the buffer protocol of bytes (memoryview works), nbytes."""

        @property
        def nbytes(self):
            return len(self)

    def device_key():
        return {"gpu": gpu.name, "cc": list(gpu.compute_capability)}

    class ITimingCache:
        def __init__(self, entries: int, device: dict):
            self.entries, self.device = entries, device

        def serialize(self):
            return IHostMemory(CACHE_MAGIC + json.dumps({"entries": self.entries, "device": self.device}).encode())

    class IBuilderConfig:
        def __init__(self):
            # TF32 is the one builder flag set by default (IBuilderConfig: "TF32 ... enabled by default").
            self.pools, self.profiles, self.cache = {}, [], None
            self.flags = 1 << int(T.BuilderFlag.TF32)
            self.hardware_level = T.HardwareCompatibilityLevel.NONE

        def set_memory_pool_limit(self, pool, pool_size):
            self.pools[typed(pool, "MemoryPoolType")] = int(pool_size)

        def get_memory_pool_limit(self, pool):
            return self.pools[typed(pool, "MemoryPoolType")]

        def add_optimization_profile(self, profile):
            if "add_optimization_profile" in gpu.refuse:
                return -1
            if not profile.shapes:
                return -1  # an invalid profile: -1 (IBuilderConfig::addOptimizationProfile)
            self.profiles.append(dict(profile.shapes))
            return len(self.profiles) - 1

        def create_timing_cache(self, serialized_timing_cache):
            data = bytes(serialized_timing_cache)
            if not data:
                return ITimingCache(0, device_key())
            if not data.startswith(CACHE_MAGIC):
                raise NotModelled("a timing cache this simulator did not write")
            spec = json.loads(data[len(CACHE_MAGIC):])
            return ITimingCache(spec["entries"], spec["device"])

        def set_timing_cache(self, cache, ignore_mismatch):
            if "set_timing_cache" in gpu.refuse:
                return False
            if cache.device != device_key() and not ignore_mismatch:
                return False  # "A failure will be reported if the CUDA device property ... is different"
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

        def set_flag(self, flag):
            self.flags |= 1 << int(typed(flag, "BuilderFlag"))

        def get_flag(self, flag):
            return bool(self.flags & (1 << int(typed(flag, "BuilderFlag"))))

        def clear_flag(self, flag):
            self.flags &= ~(1 << int(typed(flag, "BuilderFlag")))

        @property
        def hardware_compatibility_level(self):
            return self.hardware_level

        @hardware_compatibility_level.setter
        def hardware_compatibility_level(self, level):
            self.hardware_level = typed(level, "HardwareCompatibilityLevel")

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            known = sum(1 << int(f) for f in T.NetworkDefinitionCreationFlag)
            if flags & ~known:
                raise NotModelled(f"network creation flags {flags:#x}")
            return INetworkDefinition(flags)

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            if "build_serialized_network" in gpu.refuse:
                return error(self.logger, "internal error building the engine")
            strongly_typed = major >= 11 or network.get_flag(T.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
            if not strongly_typed:
                raise NotModelled("a weakly typed network (precision from builder flags)")
            if network.onnx is None:
                raise NotModelled("a network not filled by OnnxParser")
            profile = config.profiles[0] if config.profiles else {}
            if len(config.profiles) > 1:
                raise NotModelled("more than one optimization profile")
            for tensor in network._inputs:
                shapes = profile.get(tensor.name)
                if shapes is None:
                    if any(d < 0 for d in tensor.shape):
                        error(self.logger, f"{tensor.name}: dynamic input without an optimization profile")
                        return None
                    continue
                if any(len(s) != len(tensor.shape) or any(0 <= d != v for d, v in zip(tensor.shape, s))
                       for s in shapes):
                    error(self.logger, f"{tensor.name}: profile {shapes} does not match the network {tensor.shape}")
                    return None
            unknown = set(profile) - {t.name for t in network._inputs}
            if unknown:
                error(self.logger, f"profile for tensors that are not network inputs: {sorted(unknown)}")
                return None
            if config.cache is not None:
                config.cache.entries += 1
            vc = config.get_flag(T.BuilderFlag.VERSION_COMPATIBLE)
            if vc and config.get_flag(T.BuilderFlag.EXCLUDE_LEAN_RUNTIME):
                raise NotModelled("EXCLUDE_LEAN_RUNTIME")
            header = {"version": version, "version_compatible": vc, "hardware": config.hardware_level.name,
                      "device": device_key(), "workspace": config.pools.get(T.MemoryPoolType.WORKSPACE),
                      "network_flags": network.flags, "builder_flags": config.flags, "io_dtypes": dict(gpu.io_dtypes),
                      "profile": {k: [list(s) for s in v] for k, v in profile.items()}}
            head = json.dumps(header).encode()
            return IHostMemory(PLAN_MAGIC + len(head).to_bytes(4, "little") + head + network.onnx)

    class Runtime:
        def __init__(self, logger):
            self.logger, self.engine_host_code_allowed = logger, False

        def deserialize_cuda_engine(self, serialized_engine):
            data = bytes(memoryview(serialized_engine))
            if "deserialize_cuda_engine" in gpu.refuse:
                return error(self.logger, "internal error deserializing the engine")
            if not data.startswith(PLAN_MAGIC):
                error(self.logger, "the serialized engine is not an engine (magic tag mismatch)")
                return None
            size = int.from_bytes(data[8:12], "little")
            header = json.loads(data[12:12 + size])
            built = tuple(int(p) for p in header["version"].split(".")[:2])
            if header["version_compatible"]:
                if built[0] != major or (major, minor) < built:
                    raise NotModelled(f"a version-compatible {header['version']} engine on TensorRT {version}")
                if not self.engine_host_code_allowed:
                    error(self.logger, "the engine has host code; set engine_host_code_allowed to deserialize it")
                    return None
            elif header["version"] != version:
                error(self.logger, f"serialization version mismatch: built by {header['version']}, this is {version}")
                return None
            cc_built, cc_here = tuple(header["device"]["cc"]), gpu.compute_capability
            ok = {"NONE": cc_built == cc_here, "AMPERE_PLUS": cc_here >= (8, 0),
                  "SAME_COMPUTE_CAPABILITY": cc_built == cc_here}[header["hardware"]]
            if not ok:
                error(self.logger, f"the engine was built for compute capability {cc_built}, this GPU is {cc_here}")
                return None
            if not gpu.allocate():  # the engine's weights and constants on the device
                error(self.logger, "out of device memory deserializing the engine")
                return None
            return ICudaEngine(self, header, data[12 + size:])

    def counted(obj, kind):
        gpu._objects[kind] += 1
        weakref.finalize(obj, lambda: gpu._objects.__setitem__(kind, gpu._objects[kind] - 1))

    class ICudaEngine:
        def __init__(self, runtime, header, onnx):
            self._runtime = runtime  # keep_alive: the engine keeps its runtime
            self.session, self.key = session(onnx), hashlib.sha256(onnx).hexdigest()
            self.io = {name: (getattr(T.TensorIOMode, mode), getattr(T.DataType, header["io_dtypes"].get(name, dtype)),
                              Dims(shape)) for name, mode, dtype, shape in _graph_io(self.session)}
            self.names = list(self.io)
            self.profile = {k: tuple(Dims(s) for s in v) for k, v in header["profile"].items()}
            self.logger = runtime.logger
            counted(self, "engine")

        @property
        def num_io_tensors(self):
            return len(self.names)

        @property
        def device_memory_size_v2(self):
            return CONTEXT_MEMORY  # not modelled in size: a fixed figure

        @property
        def num_optimization_profiles(self):
            return 1

        def get_tensor_name(self, index):
            return self.names[index]

        def get_tensor_mode(self, name):
            return self.io[name][0] if name in self.io else T.TensorIOMode.NONE

        def get_tensor_dtype(self, name):
            return self.io[name][1]

        def get_tensor_shape(self, name):
            if name not in self.io:
                raise NotModelled(f"get_tensor_shape of {name!r}, not a tensor (Dims{{-1}})")
            return self.io[name][2]

        def get_tensor_profile_shape(self, name, profile_index):
            if profile_index != 0 or name not in self.profile:
                raise NotModelled(f"profile {profile_index} shapes of {name!r}, not a dynamic input of profile 0")
            return list(self.profile[name])

        def create_execution_context(self):
            if "create_execution_context" in gpu.refuse or not gpu.allocate():  # its activation memory
                error(self.logger, "out of device memory creating the execution context")
                return None
            return IExecutionContext(self)

    class IExecutionContext:
        def __init__(self, engine):
            self.engine = engine  # keep_alive: the context keeps its engine
            self.shapes: dict[str, Dims] = {}
            self.addresses: dict[str, int] = {}
            self.serial = next(gpu.serials)  # ids are reused once an object dies: a serial is not
            counted(self, "context")
            weakref.finalize(self, gpu.destroyed_contexts.add, self.serial)

        def _error(self, msg):
            error(self.engine.logger, msg)
            return False

        def set_input_shape(self, name, shape):
            shape = _dims(shape)
            if "set_input_shape" in gpu.refuse:
                return self._error("internal error")
            if self.engine.get_tensor_mode(name) != T.TensorIOMode.INPUT:
                return self._error(f"{name} is not an input tensor")
            network = self.engine.io[name][2]
            if len(shape) != len(network):
                return self._error(f"{name}: rank {len(shape)} does not match the engine's {len(network)}")
            if any(0 <= d != s for d, s in zip(network, shape)):
                return self._error(f"{name}: {shape} does not agree with the network dimensions {network}")
            if name in self.engine.profile:
                low, _, high = self.engine.profile[name]
                if not all(lo <= s <= hi for s, lo, hi in zip(shape, low, high)):
                    return self._error(f"{name}: {shape} is outside the optimization profile [{low}, {high}]")
            self.shapes[name] = shape
            return True

        def _input_shapes(self):
            """Every input's shape, or None while a dynamic one is not set."""
            shapes = {}
            for name, (mode, _, dims) in self.engine.io.items():
                if mode == T.TensorIOMode.INPUT:
                    shape = self.shapes.get(name, dims)
                    if any(d < 0 for d in shape):
                        return None
                    shapes[name] = tuple(shape)
            return shapes

        def get_tensor_shape(self, name):
            if name not in self.engine.io:
                raise NotModelled(f"get_tensor_shape of {name!r}, not a tensor (Dims{{-1}})")
            mode, _, dims = self.engine.io[name]
            if mode == T.TensorIOMode.INPUT:
                return self.shapes.get(name, dims)
            shapes = self._input_shapes()
            if shapes is None:
                return dims  # -1 where a runtime dimension is not known yet
            return Dims(ort_output_shapes(self.engine.session, self.engine.key, shapes)[name])

        def set_tensor_address(self, name, memory):
            memory = operator.index(memory)
            if "set_tensor_address" in gpu.refuse:
                return self._error("internal error")
            if name not in self.engine.io:
                return self._error(f"{name} is not a tensor of the engine")
            if memory % 256:
                return self._error(f"{name}: address {memory:#x} is not 256-byte aligned")
            self.addresses[name] = memory
            return True

        def get_tensor_address(self, name):
            return self.addresses.get(name, 0)

        def execute_async_v3(self, stream_handle):
            if "execute_async_v3" in gpu.refuse:
                return self._error("enqueueV3: internal error")
            shapes = self._input_shapes()
            if shapes is None:
                return self._error("enqueueV3: not every input shape is specified")
            missing = [n for n in self.engine.names if not self.addresses.get(n)]
            if missing:
                return self._error(f"enqueueV3: no address set for {missing}")
            outputs = {n: self.get_tensor_shape(n) for n in self.engine.names if n not in shapes}
            np_types = {getattr(T.DataType, t[0]): np.dtype(t[1]) for t in ORT_TYPES.values()}
            # What the kernel uses, captured now (not the context: the work must not keep it alive).
            io = {n: (self.addresses[n], (shapes | outputs)[n], np_types[self.engine.io[n][1]])
                  for n in self.engine.names}
            sess = self.engine.session

            def run():
                views = {n: gpu.view(addr, int(np.prod(shape)) * dtype.itemsize, device_access=True)
                         for n, (addr, shape, dtype) in io.items()}
                if any(v is None for v in views.values()):
                    return gpu.fault()  # a tensor outside device-accessible memory: illegal address
                views = {n: v.view(io[n][2]).reshape(io[n][1]) for n, v in views.items()}
                feeds = {i.name: views[i.name].astype(ORT_TYPES[i.type][1]) for i in sess.get_inputs()}
                results = sess.run(None, feeds)
                for o, value in zip(sess.get_outputs(), results):
                    views[o.name][...] = value.astype(views[o.name].dtype)

            ranges = [(addr, int(np.prod(shape)) * dtype.itemsize) for addr, shape, dtype in io.values()]
            gpu.enqueue(stream_handle, Op("execute_async_v3", run, ranges, context=self.serial))
            return True

    for cls in (Logger, Builder, OnnxParser, Runtime, ParserError, IHostMemory, Dims, ICudaEngine, IExecutionContext,
                IBuilderConfig, INetworkDefinition, ITensor, ITimingCache, IOptimizationProfile):
        setattr(trt, cls.__name__, cls)
    return trt
