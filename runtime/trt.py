"""The TensorRT backend: one engine per stage, `contexts` lanes per engine.

Life cycle (the `Backend` seam of `creps.runtime.backends`): check each engine's manifest
entry against this machine (TensorRT version, GPU, host code) and refuse a mismatch with
the command that rebuilds it; read each engine file once, check those bytes against the
manifest's sha256 and deserialize them (`Runtime.deserialize_cuda_engine`); per engine make
`contexts` lanes, each its own execution context, CUDA stream and two slots of device buffers
and page-locked host buffers sized from the engine's optimization profile maxima (so N lanes
take N times the buffers and TensorRT's activation memory; logged at info); run calls with
`set_input_shape`, `set_tensor_address` and `execute_async_v3` on a lane's stream; `close`
waits for every lane's stream, then frees everything in reverse order. Every resource is
registered on one `ExitStack` as it is made, so a failure part-way (a later engine that
does not deserialize, an allocation that fails) frees all that was made before it.

Host code: a version-compatible engine embeds TensorRT's lean runtime, executable host
code that runs in this process, and TensorRT deserializes it only with
`IRuntime.engine_host_code_allowed` set. creps sets it only on the user's explicit
opt-in (`creps-run --allow-engine-host-code`, `Runtime(..., allow_engine_host_code=True)`)
and only for bytes whose sha256 matches the manifest.

Concurrency: `run` takes a free lane of its stage (waiting while all are busy), gives it back
when done, also on error, and returns copies; so `parallel` is `contexts` calls from as many
threads. Overlap: `run_stream` takes an iterable of calls, holds one lane and
double-buffers them over its two slots: call i+1 is staged into the other slot's pinned
buffers and enqueued (upload, execute, download) while the GPU still works on call i, and
call i's output is handed out when its event completes. On one stream the device-side
copies and kernels of one lane's calls run in order; what overlaps is the host work
(copying a tile into pinned memory, the caller writing the previous tile out) with the
GPU work. With one context the runtime sends every line chunk and pixel tile through
`run_stream`; with more it makes `contexts` `run` calls at once (lanes on separate streams).

CUDA comes from cuda-python (`cuda.bindings.runtime`, or `cuda.cudart` before 12.6); every
call's error code is checked in `cuda_call`. Nothing here imports TensorRT or CUDA until
a backend is created, so the module imports on any machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import queue
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from creps.errors import BundleError, CrepsError, install_hint
from creps.runtime.backends import RUN_STAGES, Backend, BackendUnavailable, check_io
from creps.runtime.bundle import Bundle
from creps.runtime.precision import engine_mismatch, engines_precision

log = logging.getLogger(__name__)

SLOTS = 2
REBUILD = "rebuild the engines on this machine: creps-export --out {path} --trt"
# Version-compatible engines of one major release that a later major runs (TensorRT 11.4
# support matrix, "Engine Portability": 10.x engines on an 11.x runtime; 8.x on 10.x, which
# creps never builds, left out). Within a major release, any later version runs them.
LATER_MAJORS = {10: (11,)}


class CudaError(CrepsError):
    """A CUDA runtime call failed."""


def load_cudart():
    """cuda-python's runtime module, or BackendUnavailable."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python before 12.6
        except ImportError:
            raise BackendUnavailable(f"tensorrt: cuda-python is not installed here ({install_hint('trt')})") from None
    return cudart


def load_tensorrt():
    """The tensorrt module, or BackendUnavailable (the one loader, for the runtime and the builder)."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable(f"tensorrt: TensorRT is not installed here ({install_hint('trt')}, "
                                 "on a machine with an NVIDIA GPU)") from None
    return trt


def cuda_call(cudart, result):
    """Unpack a cuda-python result tuple (error, *values); raise CudaError on an error code."""
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        _, text = cudart.cudaGetErrorString(err)
        raise CudaError(f"CUDA error {int(err)}: {text.decode() if isinstance(text, bytes) else text}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


@dataclass(frozen=True)
class Device:
    name: str
    compute_capability: str  # "8.7"


def current_device(cudart) -> Device:
    """The GPU this process runs on, or BackendUnavailable when there is none."""
    try:
        count = cuda_call(cudart, cudart.cudaGetDeviceCount())
    except CudaError as exc:
        raise BackendUnavailable(f"tensorrt: no usable CUDA device ({exc})") from None
    if not count:
        raise BackendUnavailable("tensorrt: no CUDA device on this machine")
    props = cuda_call(cudart, cudart.cudaGetDeviceProperties(cuda_call(cudart, cudart.cudaGetDevice())))
    name = props.name.split(b"\0", 1)[0].decode() if isinstance(props.name, bytes) else str(props.name)
    return Device(name, f"{props.major}.{props.minor}")


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def runs_here(built: str, here: str, version_compatible: bool) -> bool:
    """Whether TensorRT `here` runs an engine built by TensorRT `built`: the exact version,
    or for a version-compatible engine the same or a later version of its major release,
    or a later major that runs that release's engines (LATER_MAJORS)."""
    built_v, here_v = version_tuple(built), version_tuple(here)
    if not version_compatible:
        return here_v == built_v
    if not built_v or not here_v:
        return False
    return (here_v[0] == built_v[0] and here_v >= built_v) or here_v[0] in LATER_MAJORS.get(built_v[0], ())


def check_engine(entry: dict, bundle_path, tensorrt_version: str, device: Device) -> None:
    """Refuse an engine built for another TensorRT or GPU (BackendUnavailable, saying how to rebuild).

    Versions: `runs_here`. Hardware compatibility `ampere_plus` accepts any GPU of compute
    capability 8.0 or later, `same_compute_capability` any GPU of the engine's capability;
    otherwise the GPU model must match.
    """
    rebuild = REBUILD.format(path=bundle_path)
    built, here = entry.get("tensorrt_version", "?"), tensorrt_version
    if not runs_here(built, here, bool(entry.get("version_compatible"))):
        raise BackendUnavailable(f"tensorrt: engine {entry['file']} was built with TensorRT {built}, "
                                 f"this machine has {here}; {rebuild}")
    level = entry.get("hardware_compatibility", "none")
    cc_built, cc_here = entry.get("compute_capability", "?"), device.compute_capability
    if level == "ampere_plus":
        ok = version_tuple(cc_here) >= (8, 0)
    elif level == "same_compute_capability":
        ok = cc_here == cc_built
    else:
        ok = cc_here == cc_built and device.name == entry.get("gpu_name")
    if not ok:
        raise BackendUnavailable(f"tensorrt: engine {entry['file']} was built for {entry.get('gpu_name')} "
                                 f"(compute capability {cc_built}), this GPU is {device.name} ({cc_here}); {rebuild}")


def check_host_code(entry: dict, bundle_path, allowed: bool) -> None:
    """Refuse a version-compatible engine (it carries executable host code) unless the user allowed it."""
    if entry.get("version_compatible") and not allowed:
        raise BackendUnavailable(
            f"tensorrt: engine {entry['file']} is version-compatible, so it carries TensorRT's lean runtime as "
            "executable host code, run only on request: if you trust this bundle, pass creps-run "
            "--allow-engine-host-code (Runtime(..., allow_engine_host_code=True)), or rebuild it without "
            f"--version-compatible: creps-export --out {bundle_path} --trt")


def pipeline_order(count: int, slots: int = SLOTS) -> list[tuple[str, int]]:
    """The double-buffered order of `count` calls: ("submit", i) and ("collect", i) steps.

    Call i uses slot i % slots. A slot is resubmitted only after its previous call was
    collected, at most `slots` calls are in flight, and calls are collected in order.
    """
    order = []
    for i in range(count):
        if i >= slots:
            order.append(("collect", i - slots))
        order.append(("submit", i))
    order += [("collect", i) for i in range(max(0, count - slots), count)]
    return order


def engine_for(bundle: Bundle, stage: str) -> dict:
    entry = bundle.engines.get(stage)
    if entry is None:
        raise BackendUnavailable(f"tensorrt: the bundle has no {stage} engine; "
                                 f"build them with creps-export --out {bundle.path} --trt")
    return entry


class _Slot:
    """Device and pinned host buffers of one in-flight call, an event marking its completion.

    Each allocation's release is pushed on `stack` as soon as it is made."""

    def __init__(self, cudart, sizes: dict[str, int], stack: contextlib.ExitStack):
        self.device, self.host_ptr = {}, {}
        for name, size in sizes.items():
            self.device[name] = cuda_call(cudart, cudart.cudaMalloc(size))
            stack.callback(lambda ptr=self.device[name]: cuda_call(cudart, cudart.cudaFree(ptr)))
            self.host_ptr[name] = cuda_call(cudart, cudart.cudaMallocHost(size))
            stack.callback(lambda ptr=self.host_ptr[name]: cuda_call(cudart, cudart.cudaFreeHost(ptr)))
        self.host = {n: np.ctypeslib.as_array(ctypes.cast(int(ptr), ctypes.POINTER(ctypes.c_float)),
                                              shape=(sizes[n] // 4,)) for n, ptr in self.host_ptr.items()}
        self.event = cuda_call(cudart, cudart.cudaEventCreate())
        stack.callback(lambda: cuda_call(cudart, cudart.cudaEventDestroy(self.event)))
        self.shapes: dict[str, tuple[int, ...]] = {}  # output shapes of the call in flight


class _Lane:
    """One execution context of an engine with its own CUDA stream and SLOTS buffer slots: what
    one call (or one run_stream) holds while it runs. Lanes of one engine run concurrently."""

    def __init__(self, engine, path, stack: contextlib.ExitStack):
        stack.callback(self._release)
        self.context = engine.create_execution_context()
        if self.context is None:  # TensorRT returns None when it cannot (out of GPU memory)
            raise BackendUnavailable(f"tensorrt: cannot create an execution context for {path} "
                                     "(see the TensorRT log above)")
        self.stream, self.slots = None, []

    def allocate(self, cudart, sizes: dict[str, int], stack: contextlib.ExitStack) -> None:
        self.stream = cuda_call(cudart, cudart.cudaStreamCreate())
        stack.callback(lambda: cuda_call(cudart, cudart.cudaStreamDestroy(self.stream)))
        self.slots = [_Slot(cudart, sizes, stack) for _ in range(SLOTS)]

    def _release(self) -> None:
        self.context = None  # before the engine it was made from (TensorRT's order)


class _StageEngine:
    """One deserialized engine, its IO and `contexts` lanes (released through `stack`), and
    the queue of the lanes not in use."""

    def __init__(self, trt, cudart, runtime, bundle: Bundle, stage: str, entry: dict, host_code: bool,
                 contexts: int, stack: contextlib.ExitStack):
        self.trt, self.cudart, self.stage = trt, cudart, stage
        path = bundle.file(entry)
        data = path.read_bytes()  # hashed and deserialized from the same bytes: nothing can swap the file between
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise BundleError(f"{bundle.path}: {entry['file']} ({stage} engine) does not match its sha256 in the "
                              f"manifest (corrupt or altered); {REBUILD.format(path=bundle.path)}")
        runtime.engine_host_code_allowed = host_code
        self.engine = runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise BackendUnavailable(f"tensorrt: {path} does not deserialize here (see the TensorRT log above); "
                                     + REBUILD.format(path=bundle.path))
        stack.callback(self._release)
        self.lanes = [_Lane(self.engine, path, stack) for _ in range(contexts)]
        context = self.lanes[0].context
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        check_io(bundle, stage, self.inputs, self.outputs)
        for name in names:
            if self.engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
                raise BackendUnavailable(f"tensorrt: {path}: tensor {name} is not float32; "
                                         + REBUILD.format(path=bundle.path))
        self.ranges = {n: self._profile(n) for n in self.inputs}
        for name in self.inputs:  # the largest call, to size the output buffers
            if not context.set_input_shape(name, self.ranges[name][2]):
                raise BackendUnavailable(f"tensorrt: {path} refuses its own profile maximum {self.ranges[name][2]} "
                                         f"for {name} (see the TensorRT log above); " + REBUILD.format(path=bundle.path))
        max_shapes = {n: tuple(self.ranges[n][2]) for n in self.inputs}
        max_shapes |= {n: tuple(context.get_tensor_shape(n)) for n in self.outputs}
        del context  # only the lanes hold contexts: their release drops them
        sizes = {n: 4 * int(np.prod(s)) for n, s in max_shapes.items()}
        for lane in self.lanes:
            lane.allocate(cudart, sizes, stack)
        self.buffer_bytes = SLOTS * sum(sizes.values())  # per lane, on the device and pinned on the host
        self.context_bytes = int(self.engine.device_memory_size_v2)  # TensorRT's activation memory per context
        self.free: queue.Queue[_Lane] = queue.Queue()
        for lane in self.lanes:
            self.free.put(lane)

    def _release(self) -> None:
        self.engine = None  # after every lane's context (pushed later on the stack, released first)

    @contextlib.contextmanager
    def lane(self) -> Iterator[_Lane]:
        """A lane not in use, for the duration of the block (blocks while every lane is busy);
        given back also when the block raises."""
        lane = self.free.get()
        try:
            yield lane
        finally:
            self.free.put(lane)

    def _profile(self, name: str) -> list[tuple[int, ...]]:
        """(min, opt, max) shapes of an input in profile 0; a static input (psi) is its shape."""
        shape = tuple(self.engine.get_tensor_shape(name))
        if all(d >= 0 for d in shape):
            return [shape, shape, shape]
        return [tuple(d) for d in self.engine.get_tensor_profile_shape(name, 0)]

    def shape_range(self, name: str) -> list[tuple[int, int]]:
        low, _, high = self.ranges[name]
        return list(zip(low, high))

    def submit(self, lane: _Lane, slot: _Slot, feeds: dict[str, np.ndarray]) -> None:
        """Stage inputs into the slot's pinned buffers and enqueue upload, execute, download on the lane."""
        context, stream = lane.context, lane.stream
        cudart, h2d, d2h = self.cudart, self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, \
            self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self.inputs:  # shapes first: a call outside the profile must not touch the buffers
            if not context.set_input_shape(name, feeds[name].shape):
                raise CrepsError(f"tensorrt: {self.stage} input {name} shape {feeds[name].shape} is outside the "
                                 f"engine's profile {self.ranges[name]}")
        for name in self.inputs:
            value = feeds[name]
            np.copyto(slot.host[name][:value.size].reshape(value.shape), value, casting="same_kind")
            cuda_call(cudart, cudart.cudaMemcpyAsync(slot.device[name], slot.host_ptr[name], 4 * value.size,
                                                     h2d, stream))
        slot.shapes = {n: tuple(context.get_tensor_shape(n)) for n in self.outputs}
        for name in self.inputs + self.outputs:
            if not context.set_tensor_address(name, int(slot.device[name])):
                raise CrepsError(f"tensorrt: the {self.stage} engine refuses the address of {name} "
                                 "(see the TensorRT log)")
        if not context.execute_async_v3(stream):
            raise CrepsError(f"tensorrt: executing the {self.stage} engine failed (see the TensorRT log)")
        for name in self.outputs:
            size = 4 * int(np.prod(slot.shapes[name]))
            cuda_call(cudart, cudart.cudaMemcpyAsync(slot.host_ptr[name], slot.device[name], size, d2h, stream))
        cuda_call(cudart, cudart.cudaEventRecord(slot.event, stream))

    def collect(self, slot: _Slot) -> dict[str, np.ndarray]:
        """Wait for the slot's call; its outputs as views of the pinned buffers (valid until reuse)."""
        cuda_call(self.cudart, self.cudart.cudaEventSynchronize(slot.event))
        return {n: slot.host[n][:int(np.prod(s))].reshape(s) for n, s in slot.shapes.items()}


class TensorRTBackend(Backend):
    """Runs the bundle's engines (`creps-export --trt`) on this machine's GPU.

    `allow_engine_host_code`: deserialize version-compatible engines, which carry
    executable host code (see the module docstring); refused otherwise. `precision` must
    be the one the engines were built in ("auto": whichever it is).
    """

    name = "tensorrt"

    def __init__(self, bundle: Bundle, allow_engine_host_code: bool = False, precision: str = "auto",
                 contexts: int = 1):
        if contexts < 1:
            raise CrepsError(f"tensorrt: {contexts} execution contexts per engine (at least 1)")
        self.contexts = contexts
        trt, cudart = load_tensorrt(), load_cudart()
        device = current_device(cudart)
        entries = {stage: engine_for(bundle, stage) for stage in RUN_STAGES}
        mismatch = engine_mismatch(bundle, precision)
        if mismatch:
            raise BackendUnavailable(f"tensorrt: {mismatch}")
        self._precision = engines_precision(bundle)
        for entry in entries.values():  # every refusal before anything is allocated
            check_engine(entry, bundle.path, trt.__version__, device)
            check_host_code(entry, bundle.path, allow_engine_host_code)
        self.cudart = cudart
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self._resources: contextlib.ExitStack | None = None
        with contextlib.ExitStack() as stack:  # on any failure below, frees what was made, in reverse
            self.engines = {}
            for stage, entry in entries.items():
                host_code = bool(entry.get("version_compatible")) and allow_engine_host_code
                self.engines[stage] = _StageEngine(trt, cudart, self.runtime, bundle, stage, entry, host_code,
                                                   contexts, stack)
            self._resources = stack.pop_all()
        log.info("tensorrt %s on %s (%s)", trt.__version__, device.name, device.compute_capability)
        buffers = sum(e.buffer_bytes for e in self.engines.values())
        activations = sum(e.context_bytes for e in self.engines.values())
        log.info("tensorrt: %d execution context(s) per engine, each with its own stream and buffers: "
                 "%.1f MiB of device memory per context (%.1f MiB buffers, %.1f MiB TensorRT activations) "
                 "and %.1f MiB pinned host memory; %.1f MiB of device memory in all", contexts,
                 (buffers + activations) / 2**20, buffers / 2**20, activations / 2**20, buffers / 2**20,
                 contexts * (buffers + activations) / 2**20)

    @property
    def precision(self) -> str:  # what the engines were built in
        return self._precision

    def _engine(self, stage: str) -> _StageEngine:
        if self._resources is None:
            raise CrepsError("tensorrt: the backend is closed")
        return self.engines[stage]

    def run(self, stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One call on a free lane (thread-safe; waits while all `contexts` are busy). The
        outputs are copies: the lane is given back, to any thread, when this returns."""
        engine = self._engine(stage)
        with engine.lane() as lane:
            engine.submit(lane, lane.slots[0], feeds)
            return {n: v.copy() for n, v in engine.collect(lane.slots[0]).items()}

    def run_stream(self, stage: str, calls: Iterable[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
        """Outputs of `calls` in order, double-buffered on one lane held until the stream ends
        or is closed (see the module docstring); each output is a view valid until the next."""
        engine = self._engine(stage)
        calls = list(calls) if not isinstance(calls, list) else calls
        with engine.lane() as lane:
            for step, i in pipeline_order(len(calls)):
                slot = lane.slots[i % SLOTS]
                if step == "submit":
                    engine.submit(lane, slot, calls[i])
                else:
                    yield engine.collect(slot)
                self._engine(stage)  # a stream resumed after close stops here

    def shape_range(self, stage: str, input: str) -> list[tuple[int, int]] | None:
        return self.engines[stage].shape_range(input)

    def parallel(self, stage: str) -> int:
        return self.contexts  # one lane per concurrent call; with 1, overlap comes from run_stream

    def close(self) -> None:
        """Wait for the work still queued on every lane's stream (an abandoned run_stream), then
        free every buffer, event, stream, context and engine in reverse order; a second call
        does nothing. Calls made after it raise "backend is closed". It does not wait for calls
        in flight on other threads (a run_stream abandoned but still referenced holds its lane
        forever): the caller stops its calls first, as creps-serve does before it closes;
        closing under a call in flight frees memory that call is using."""
        resources, self._resources = self._resources, None
        if resources is None:
            return
        for engine in self.engines.values():  # run first (last in), each even if another raises
            for lane in engine.lanes:
                resources.callback(lambda s=lane.stream: cuda_call(self.cudart, self.cudart.cudaStreamSynchronize(s)))
        resources.close()
