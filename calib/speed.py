"""Whether INT8 makes a stage faster on this CPU, measured: the INT8 plan quantizes only the stages where it does.

ONNX Runtime's integer kernels win where the layers are wide: the line stage's 1024-wide
MatMuls ran 3x faster in INT8 on a Zen 4 with VNNI. The pixel stage's layers are 32-128
wide, and each INT8 layer adds a quantize pass over its input and loses the Gemm's fused
bias and activation, while its INT8 graph needs the slower activation modulation form: on
the published configuration INT8 pixel stages ran 0.8-1.0x FP32, and their layers only
spent the error budget (and every pixel layer in INT8 ran 1.2-1.4x, at 31 dB). So the
plan's INT8 graph of each stage is timed against its exported FP32 graph as the ONNX
Runtime CPU backend runs them (every graph optimisation, one thread per call, one call per
core at once: two INT8 pixel tiles at once ran 0.9x where one alone ran 1.6x) on calls of
the runtime's default size (a line chunk, a pixel tile), best of `REPEATS` rounds in turn,
and a stage under MIN_SPEEDUP leaves the plan (calib/sensitivity.py `Search.settle`). The timing is of
this CPU: plans for TensorRT name their stages (creps-calib --int8-stages).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx

from creps.calib.samples import Job, StageRunner
from creps.runtime.backends import available_cores, session_options
from creps.runtime.precision import REDUCED_STAGES
from creps.runtime.tiling import DEFAULT_LINES, DEFAULT_TILE

MIN_SPEEDUP = 1.05  # below it a stage stays float: INT8 there costs error and saves (next to) nothing
REPEATS = 5


def runtime_session(model: onnx.ModelProto):
    """An ONNX Runtime CPU session with the CPU backend's options for one call of one thread."""
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), session_options(ort, 1), providers=["CPUExecutionProvider"])


def best_seconds(session, feeds: dict, calls: int = 1) -> float:
    """Best of REPEATS wall-clock seconds of `calls` concurrent runs of `session` on `feeds`."""
    return alternated_best_seconds([session], feeds, calls)[0]


def alternated_best_seconds(sessions: list, feeds: dict, calls: int = 1) -> list[float]:
    """Per session, best_seconds, the sessions taking turns round by round, so that a change of
    load during the timing hits them alike (timed one after the other, the same pixel graph ran
    1.09x itself on a 2-core virtual machine: benchmarks/results/int8-xeon.json)."""
    with ThreadPoolExecutor(calls) as pool:
        def once(session) -> float:
            start = time.perf_counter()
            for _ in pool.map(lambda _: session.run(None, feeds), range(calls)):
                pass
            return time.perf_counter() - start

        for session in sessions:
            once(session)  # arenas and kernels warm
        rounds = [[once(session) for session in sessions] for _ in range(REPEATS)]
        return [min(times) for times in zip(*rounds)]


def runtime_feeds(exported: dict[str, onnx.ModelProto], job: Job) -> dict[str, dict]:
    """Per stage, the inputs of one runtime-sized call for `job`'s latent: DEFAULT_LINES lines
    (half rows, half columns) and a DEFAULT_TILE pixel tile."""
    runner = StageRunner(exported)
    ws = runner.ws(job)
    width, height = DEFAULT_TILE
    half = np.linspace(0.0, 1.0, DEFAULT_LINES // 2, dtype=np.float32)
    cols, rows = runner.lines(ws, half[:height], half[:width])
    return {"lines": {"ws": ws, "ys": half, "xs": half}, "pixels": {"ws": ws, "cols": cols, "rows": rows}}


def stage_speedups(exported: dict[str, onnx.ModelProto], quantized: dict[str, onnx.ModelProto],
                   job: Job) -> dict[str, dict]:
    """Per stage, {"fp32_seconds", "int8_seconds", "speedup"} of runtime-sized calls of `job`'s
    latent (DEFAULT_LINES lines, half rows and half columns; a DEFAULT_TILE pixel tile), as many
    at once as the CPU backend makes (one per core)."""
    feeds = runtime_feeds(exported, job)
    calls = available_cores()
    found = {}
    for stage in REDUCED_STAGES:
        fp32, int8 = alternated_best_seconds([runtime_session(exported[stage]), runtime_session(quantized[stage])],
                                             feeds[stage], calls)
        found[stage] = {"fp32_seconds": fp32, "int8_seconds": int8, "speedup": fp32 / int8}
    return found
