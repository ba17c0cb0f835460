"""Backends: run one stage graph of a bundle on named numpy arrays.

The seam between the tiling runtime (`creps.runtime.generate`) and an inference engine
is small on purpose. A backend subclasses `Backend`:

    class Backend:
        name: str                      # "ort-cpu", "ort-cuda", "tensorrt"
        precision: str                 # "fp32" (default), "fp16", "int8": of its lines and pixels graphs
        def run(self, stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...
        def shape_range(self, stage: str, input: str) -> list[tuple[int, int]] | None: ...
        def parallel(self, stage: str) -> int: ...
        def run_stream(self, stage: str, calls: Iterable[dict]) -> Iterator[dict]: ...  # default: each run
        def close(self) -> None: ...   # default: nothing to free; also __enter__ / __exit__

`run` evaluates the stage graph ("mapping", "lines" or "pixels") on float32 host arrays
keyed by the contract's input names (creps.runtime.stages: mapping z, psi; lines ws,
ys, xs; pixels ws, cols, rows) and returns every output by name (ws; cols, rows; img) as
float32 host arrays. Inputs may be non-contiguous views; the backend copies what it
needs. The runtime copies what it keeps from a result before the next `run`, so a
backend may return views of buffers it reuses.

`shape_range` gives, per dimension of one input, the inclusive (min, max) extent the
backend accepts (a TensorRT optimization profile), or None when any extent works (ONNX
Runtime). The runtime sizes batches, line chunks and pixel tiles inside these ranges and
refuses, with one line, a request that cannot fit them (e.g. an image side below a
profile's minimum).

`parallel` is how many `run` calls on a stage the runtime may make at once, from as
many threads; return 1 unless `run` is thread-safe and gains from it. ONNX Runtime on
the CPU runs each call on one core and lets the runtime keep every core busy with its
own line chunk or pixel tile: no per-operator synchronisation, and each tile's
activations stay in one core's cache (1.6x faster than two threads per call on a
shared 2-core machine). A GPU backend returns 1.

`run_stream(stage, calls)` gives the outputs of an iterable of feeds in order; when
`parallel(stage) == 1` the runtime sends every line chunk and pixel tile of an image
through it, so a backend that overrides it can pipeline host and device work.

`close` frees what the backend holds (GPU memory, streams); it is idempotent, and a
backend is a context manager that closes on exit. The runtime closes a backend it opened.

A backend is opened with `open_backend` for one precision (ONNX Runtime loads that
precision's graphs, TensorRT checks its engines were built in it; creps.runtime.precision;
ONNX Runtime also takes `threads`, TensorRT `allow_engine_host_code`) and raises `BackendUnavailable` (one line: what is missing and
what to install or rebuild) when it cannot run on this machine. The TensorRT backend
lives in `creps.runtime.trt` as `TensorRTBackend`, imported only when asked for, so this
module needs only numpy and, for the ONNX Runtime backends, onnxruntime.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Iterable, Iterator

import numpy as np

from creps.errors import BundleError, CrepsError, install_hint
from creps.runtime.bundle import Bundle, check_graph_file
from creps.runtime.precision import choose, stage_precision
from creps.runtime.stages import CONTRACT, RUN_STAGES, graph_key

log = logging.getLogger(__name__)

BACKENDS = ("auto", "ort-cpu", "ort-cuda", "tensorrt")
ORT_PROVIDERS = {"ort-cpu": "CPUExecutionProvider", "ort-cuda": "CUDAExecutionProvider"}


class BackendUnavailable(CrepsError):
    """A backend cannot run here (library, provider, GPU or engine missing)."""


class Backend:
    """The seam every backend implements (see the module docstring)."""

    name: str
    precision: str = "fp32"  # of the lines and pixels graphs it runs (creps.runtime.precision)

    def run(self, stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def shape_range(self, stage: str, input: str) -> list[tuple[int, int]] | None:
        raise NotImplementedError

    def parallel(self, stage: str) -> int:
        raise NotImplementedError

    def run_stream(self, stage: str, calls: Iterable[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
        for feeds in calls:
            yield self.run(stage, feeds)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_io(bundle: Bundle, stage: str, inputs: list[str], outputs: list[str]) -> None:
    """Refuse a graph whose IO names are not the stage contract's."""
    want_in, want_out = CONTRACT[stage].input_names, CONTRACT[stage].output_names
    if sorted(inputs) != sorted(want_in) or sorted(outputs) != sorted(want_out):
        raise BundleError(
            f"{bundle.path}: {stage} graph has inputs {inputs} and outputs {outputs}, "
            f"the runtime needs {list(want_in)} -> {list(want_out)}; re-export the bundle"
        )


def ort_provider(name: str):
    """(the onnxruntime module, the provider of backend `name`); BackendUnavailable (one
    line) when onnxruntime or that provider is missing."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailable(f"{name}: onnxruntime is not installed ({install_hint('ort')})") from None
    provider = ORT_PROVIDERS[name]
    if provider not in ort.get_available_providers():
        raise BackendUnavailable(
            f"{name}: this onnxruntime has no {provider} "
            "(install onnxruntime-gpu matching your CUDA, or use --backend ort-cpu)"
        )
    return ort, provider


def check_provider(session, name: str, provider: str) -> None:
    """Refuse a session that ONNX Runtime quietly moved off `provider` (to the CPU)."""
    actual = session.get_providers()[0]
    if actual != provider:
        raise BackendUnavailable(f"{name}: ONNX Runtime cannot use {provider} here (it fell back to {actual}: no "
                                 "usable GPU, or CUDA/cuDNN libraries missing); use --backend ort-cpu")


def session_options(ort, threads: int):
    """The session options OrtBackend runs every graph with: every graph optimisation (Q/DQ pairs
    become integer kernels), sequential, `threads` threads per call."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


class OrtBackend(Backend):
    """ONNX Runtime on the CPU or through its CUDA provider, the graphs of one precision
    (a name, or "auto": creps.runtime.precision.choose).

    On the CPU, `concurrent` (the default) gives each call one thread and lets the
    runtime make `threads` calls at once; otherwise each call uses `threads` threads.
    """

    def __init__(self, bundle: Bundle, threads: int | None = None, device: str = "cpu", concurrent: bool = True,
                 precision: str = "fp32"):
        self.name = f"ort-{device}"
        self.precision = choose(bundle, self.name, precision)
        self.workers = (threads or available_cores()) if concurrent and device == "cpu" else 1
        ort, provider = ort_provider(self.name)
        options = session_options(ort, 1 if self.workers > 1 else (threads or available_cores()))
        self.sessions = {}
        for stage in RUN_STAGES:
            precision = stage_precision(stage, self.precision)
            key, path = graph_key(stage, precision), bundle.graph_path(stage, precision)
            try:
                session = ort.InferenceSession(str(path), options, providers=[provider])
            except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
                raise BundleError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0]})") from None
            check_provider(session, self.name, provider)
            check_io(bundle, stage, [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
            check_graph_file(bundle, key, {t.name: t.shape for t in session.get_inputs() + session.get_outputs()})
            self.sessions[stage] = session

    def run(self, stage: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.sessions[stage]
        feeds = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in feeds.items()}
        results = session.run(None, feeds)
        return {out.name: value for out, value in zip(session.get_outputs(), results)}

    def shape_range(self, stage: str, input: str) -> list[tuple[int, int]] | None:
        return None

    def parallel(self, stage: str) -> int:
        return 1 if stage == "mapping" else self.workers


def tensorrt_backend(bundle: Bundle, allow_engine_host_code: bool, precision: str, contexts: int = 1):
    try:
        trt = importlib.import_module("creps.runtime.trt")
    except ImportError as exc:
        raise BackendUnavailable(f"tensorrt: the TensorRT backend cannot be loaded ({exc})") from None
    return trt.TensorRTBackend(bundle, allow_engine_host_code, precision, contexts)


def open_backend(bundle: Bundle, name: str = "auto", threads: int | None = None,
                 allow_engine_host_code: bool = False, precision: str | None = None, contexts: int = 1) -> Backend:
    """The backend called `name` running `precision` (creps.runtime.precision; None: as
    exported, the fp32 graphs on ONNX Runtime and the engines' own on TensorRT); `auto` =
    TensorRT if the bundle has engines of that precision that run here, else ONNX Runtime
    CUDA if available, else ONNX Runtime CPU (logged, with why). `allow_engine_host_code`:
    let TensorRT run version-compatible engines, which carry executable host code
    (creps.runtime.trt). `contexts`: TensorRT execution contexts per engine, so that many
    calls run at once (ONNX Runtime's sessions are thread-safe and need none)."""
    if name == "ort-cpu":
        return OrtBackend(bundle, threads, "cpu", precision=precision or "fp32")
    if name == "ort-cuda":
        return OrtBackend(bundle, threads, "cuda", precision=precision or "fp32")
    if name == "tensorrt":
        return tensorrt_backend(bundle, allow_engine_host_code, precision or "auto", contexts)
    if name != "auto":
        raise CrepsError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    passed = [] if bundle.engines else ["the bundle has no TensorRT engines"]  # why each better one was not taken
    for candidate in (["tensorrt"] if bundle.engines else []) + ["ort-cuda"]:
        try:
            backend = open_backend(bundle, candidate, threads, allow_engine_host_code, precision, contexts)
        except BackendUnavailable as exc:
            if candidate == "tensorrt":  # engines that do not run here deserve a warning; no CUDA is normal
                log.warning("auto backend: %s; falling back", exc)
            passed.append(str(exc))
            continue
        log.info("auto backend: %s (%s)", candidate, "; ".join(passed + [f"{candidate} runs here"]))
        return backend
    backend = open_backend(bundle, "ort-cpu", threads, precision=precision)
    log.info("auto backend: ort-cpu (%s)", "; ".join(passed))
    return backend
