"""The TensorRT backend: one engine and one execution context per stage, one CUDA stream.

Life cycle (the `Backend` seam of `creps.runtime.backends`): check each engine's manifest
entry against this machine (TensorRT version, GPU) and refuse a mismatch with the command
that rebuilds it; deserialize (`Runtime.deserialize_cuda_engine`); create one execution
context per engine; allocate two slots of device buffers and page-locked host buffers per
engine, sized from the engine's optimization profile maxima; run calls with
`set_input_shape`, `set_tensor_address` and `execute_async_v3` on the one stream.

Overlap: `run` is the synchronous seam call. `run_stream` takes an iterable of calls and
double-buffers them over the two slots: call i+1 is staged into the other slot's pinned
buffers and enqueued (upload, execute, download) while the GPU still works on call i, and
call i's output is handed out when its event completes. On one stream the device-side
copies and kernels of different calls run in order; what overlaps is the host work
(copying a tile into pinned memory, the caller writing the previous tile out) with the
GPU work. The runtime uses `run_stream` for the pixel tiles when a backend has it.

CUDA comes from cuda-python (`cuda.bindings.runtime`, or `cuda.cudart` before 12.6); every
call's error code is checked in `cuda_call`. Nothing here imports TensorRT or CUDA until
a backend is created, so the module imports on any machine.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from creps.errors import CrepsError
from creps.runtime.backends import RUN_STAGES, BackendUnavailable, check_io
from creps.runtime.bundle import Bundle

log = logging.getLogger(__name__)

SLOTS = 2
REBUILD = "rebuild the engines on this machine: creps-export --out {path} --trt"


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
            raise BackendUnavailable(
                "tensorrt: cuda-python is not installed (pip install 'creps[trt]')") from None
    return cudart


def load_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable("tensorrt: TensorRT is not installed (pip install 'creps[trt]' "
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


def check_engine(entry: dict, bundle_path, tensorrt_version: str, device: Device) -> None:
    """Refuse an engine built for another TensorRT or GPU (BackendUnavailable, saying how to rebuild).

    Version-compatible engines run on the same or a later TensorRT of the same major
    release; others need the exact version. Hardware compatibility `ampere_plus` accepts
    any GPU of compute capability 8.0 or later, `same_compute_capability` any GPU of the
    engine's capability; otherwise the GPU model must match.
    """
    rebuild = REBUILD.format(path=bundle_path)
    built, here = entry.get("tensorrt_version", "?"), tensorrt_version
    if entry.get("version_compatible"):
        ok = (version_tuple(here)[:1] == version_tuple(built)[:1]) and version_tuple(here) >= version_tuple(built)
    else:
        ok = version_tuple(here) == version_tuple(built)
    if not ok:
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
    """Device and pinned host buffers of one in-flight call, an event marking its completion."""

    def __init__(self, cudart, sizes: dict[str, int]):
        self.cudart = cudart
        self.device = {n: cuda_call(cudart, cudart.cudaMalloc(size)) for n, size in sizes.items()}
        self.host_ptr = {n: cuda_call(cudart, cudart.cudaMallocHost(size)) for n, size in sizes.items()}
        self.host = {n: np.ctypeslib.as_array(ctypes.cast(int(ptr), ctypes.POINTER(ctypes.c_float)),
                                              shape=(sizes[n] // 4,)) for n, ptr in self.host_ptr.items()}
        self.event = cuda_call(cudart, cudart.cudaEventCreate())
        self.shapes: dict[str, tuple[int, ...]] = {}  # output shapes of the call in flight

    def free(self):
        for ptr in self.device.values():
            cuda_call(self.cudart, self.cudart.cudaFree(ptr))
        for ptr in self.host_ptr.values():
            cuda_call(self.cudart, self.cudart.cudaFreeHost(ptr))
        cuda_call(self.cudart, self.cudart.cudaEventDestroy(self.event))


class _StageEngine:
    """One deserialized engine, its context, its IO and its buffer slots."""

    def __init__(self, trt, cudart, runtime, bundle: Bundle, stage: str, entry: dict):
        self.trt, self.cudart, self.stage = trt, cudart, stage
        path = bundle.file(entry)
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendUnavailable(f"tensorrt: {path} does not deserialize here; "
                                     + REBUILD.format(path=bundle.path))
        self.context = self.engine.create_execution_context()
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
            self.context.set_input_shape(name, self.ranges[name][2])
        max_shapes = {n: tuple(self.ranges[n][2]) for n in self.inputs}
        max_shapes |= {n: tuple(self.context.get_tensor_shape(n)) for n in self.outputs}
        self.slots = [_Slot(cudart, {n: 4 * int(np.prod(s)) for n, s in max_shapes.items()}) for _ in range(SLOTS)]

    def _profile(self, name: str) -> list[tuple[int, ...]]:
        """(min, opt, max) shapes of an input in profile 0; a static input (psi) is its shape."""
        shape = tuple(self.engine.get_tensor_shape(name))
        if all(d >= 0 for d in shape):
            return [shape, shape, shape]
        return [tuple(d) for d in self.engine.get_tensor_profile_shape(name, 0)]

    def shape_range(self, name: str) -> list[tuple[int, int]]:
        low, _, high = self.ranges[name]
        return list(zip(low, high))

    def submit(self, slot: _Slot, feeds: dict[str, np.ndarray], stream) -> None:
        """Stage inputs into the slot's pinned buffers and enqueue upload, execute, download."""
        cudart, h2d, d2h = self.cudart, self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, \
            self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self.inputs:  # shapes first: a call outside the profile must not touch the buffers
            if not self.context.set_input_shape(name, feeds[name].shape):
                raise CrepsError(f"tensorrt: {self.stage} input {name} shape {feeds[name].shape} is outside the "
                                 f"engine's profile {self.ranges[name]}")
        for name in self.inputs:
            value = feeds[name]
            np.copyto(slot.host[name][:value.size].reshape(value.shape), value, casting="same_kind")
            cuda_call(cudart, cudart.cudaMemcpyAsync(slot.device[name], slot.host_ptr[name], 4 * value.size,
                                                     h2d, stream))
        slot.shapes = {n: tuple(self.context.get_tensor_shape(n)) for n in self.outputs}
        for name in self.inputs + self.outputs:
            self.context.set_tensor_address(name, int(slot.device[name]))
        if not self.context.execute_async_v3(stream):
            raise CrepsError(f"tensorrt: executing the {self.stage} engine failed (see the TensorRT log)")
        for name in self.outputs:
            size = 4 * int(np.prod(slot.shapes[name]))
            cuda_call(cudart, cudart.cudaMemcpyAsync(slot.host_ptr[name], slot.device[name], size, d2h, stream))
        cuda_call(cudart, cudart.cudaEventRecord(slot.event, stream))

    def collect(self, slot: _Slot) -> dict[str, np.ndarray]:
        """Wait for the slot's call; its outputs as views of the pinned buffers (valid until reuse)."""
        cuda_call(self.cudart, self.cudart.cudaEventSynchronize(slot.event))
        return {n: slot.host[n][:int(np.prod(s))].reshape(s) for n, s in slot.shapes.items()}


class TensorRTBackend:
    """Runs the bundle's engines (`creps-export --trt`) on this machine's GPU."""

    name = "tensorrt"

    def __init__(self, bundle: Bundle, threads: int | None = None):
        trt, cudart = load_tensorrt(), load_cudart()
        device = current_device(cudart)
        entries = {stage: engine_for(bundle, stage) for stage in RUN_STAGES}
        for entry in entries.values():
            check_engine(entry, bundle.path, trt.__version__, device)
        self.cudart = cudart
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.stream = cuda_call(cudart, cudart.cudaStreamCreate())
        self.engines = {stage: _StageEngine(trt, cudart, self.runtime, bundle, stage, entry)
                        for stage, entry in entries.items()}
        log.info("tensorrt %s on %s (%s)", trt.__version__, device.name, device.compute_capability)

    def run(self, stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return next(iter(self.run_stream(stage, [feeds])))

    def run_stream(self, stage: str, calls: Iterable[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
        """Outputs of `calls` in order, double-buffered (see the module docstring)."""
        engine = self.engines[stage]
        calls = list(calls) if not isinstance(calls, list) else calls
        for step, i in pipeline_order(len(calls)):
            slot = engine.slots[i % SLOTS]
            if step == "submit":
                engine.submit(slot, calls[i], self.stream)
            else:
                yield engine.collect(slot)

    def shape_range(self, stage: str, input: str) -> list[tuple[int, int]] | None:
        return self.engines[stage].shape_range(input)

    def parallel(self, stage: str) -> int:
        return 1  # one context and one stream per engine: overlap comes from run_stream

    def close(self) -> None:
        for engine in self.engines.values():
            for slot in engine.slots:
                slot.free()
        cuda_call(self.cudart, self.cudart.cudaStreamDestroy(self.stream))
