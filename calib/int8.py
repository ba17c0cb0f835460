"""INT8 as explicit Q/DQ, calibrated on the CPU with ONNX Runtime, by TensorRT's rules (calib/qdq.py).

Only MatMul/Gemm layers that depend on the spatial inputs are quantized (they carry the
cost; calib/qdq.py `layers`): their activation inputs per tensor, their constant weights
per output channel, int8 with zero point 0. The graphs must be in the `activation`
modulation form, ((x * s) @ W.T) * d, so that W is a constant with per-channel scales; in
the `folded` form the weight is computed per sample and could only get one scale.

How each layer is quantized is decided by measurement (calib/sensitivity.py): per layer,
an activation range (`METHODS`: min-max, a percentile, entropy, or the range with the
least rounding-plus-clipping error) and a SmoothQuant migration strength
(calib/smooth.py), whichever moves the image least; then layers go to INT8 from the
least to the most sensitive while the image's uint8 PSNR stays at or above a target, and
the rest stay float (`plan`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx

from creps.calib import emulate, qdq, rounding
from creps.calib.samples import DEFAULT_JOBS, Job, StageRunner, compare, worst
from creps.runtime.precision import REDUCED_STAGES

log = logging.getLogger(__name__)

INT8_STAGES = REDUCED_STAGES  # the stages with int8 graphs (the mapping stays fp32)
CALIBRATION_PROBE = 48  # rows and columns per job fed to the calibrator
METHODS = ("minmax", "percentile", "entropy", "mse")
PERCENTILE = 99.99  # of |x|, for "percentile"
SAMPLE_CAP = 1 << 20  # values per tensor kept for the range methods (evenly strided)
# Per-tensor ranges vary with the latent (styles scale whole channels) and their maximum has
# a long tail: on the bundled default model, 96 new latents reached a median 1.64x (up to
# 2.3x) the ranges of 18 calibration latents in the pixel stage, and a plan at 45 dB on its
# calibration seeds gave 35 dB on seed 2. So ranges come from many latents, each on a small probe.
RANGE_SEEDS, RANGE_SEED_BASE, RANGE_PROBE = 128, 1_000_000, 16
# The plan is checked on more latents than the jobs for the same reason: a plan at 45 dB on
# the two calibration latents gave 38.6 dB on held-out seed 2 of the bundled default model.
# Its curve (calib/sensitivity.py) is the worst over the jobs and these latents, on small probes.
# 24 rather than 8 on the published configuration doubled the search (16 min) and still left
# one latent of seeds 0-7 at 43.8 dB (benchmarks/int8.py; 8: 42.4 dB on another).
PLAN_SEEDS, PLAN_SEED_BASE, PLAN_PROBE = 8, 2_000_000, 24
# The extra latents are drawn untruncated: psi < 1 pulls w toward its mean, so the tails are at
# psi 1. On the published configuration, of 128 range latents cycled over psi 1 and 0.7, those at
# 0.7 set the maximum of 2 of 52 tensors (at most 1.04x the psi-1 latents', median 0.73-0.77x),
# and both images of seeds 0-7 at psi 1 and 0.7 that the 45 dB plan left under 45 dB were at psi 1.
TAIL_PSI = 1.0
HISTOGRAM_BINS, ENTROPY_LEVELS = 2048, 128  # entropy: TensorRT's KL method on |x|


def calibration_feeds(models: dict[str, onnx.ModelProto], jobs: tuple[Job, ...], probe: int) -> dict[str, list]:
    """Per stage, the input dicts of the FP32 pipeline on the jobs' probe grids."""
    runner = StageRunner(models)
    feeds = {"lines": [], "pixels": []}
    for job in jobs:
        ws = runner.ws(job)
        ys, xs = job.coords(probe)
        cols, rows = runner.lines(ws, ys, xs)
        feeds["lines"].append({"ws": ws, "ys": ys, "xs": xs})
        feeds["pixels"].append({"ws": ws, "cols": cols, "rows": rows})
    return feeds


@dataclass
class Stats:
    """What calibration saw of each layer input: a sample of |x|, for the x of x @ W max |x| per
    input channel (the last axis) and the sum of x x^T over its rows (calib/rounding.py), and
    each input's shape in the first feed."""

    values: dict[str, np.ndarray]
    channel_amax: dict[str, np.ndarray]
    moments: dict[str, np.ndarray]
    shapes: dict[str, tuple[int, ...]]


def activation_stats(model: onnx.ModelProto, layers: list[qdq.Layer], feeds: list[dict],
                     with_moments: bool = True) -> Stats:
    """Stats of the layers' inputs over `feeds`; without `with_moments`, no moments (they are
    the costly part, and only weight rounding reads them)."""
    names = sorted({a for layer in layers for a in layer.activations})
    weighted = {layer.activations[0] for layer in layers if layer.weight}  # x of x @ W: channels on the last axis
    session = emulate.session(emulate.with_outputs(model, names))
    values: dict[str, list] = {n: [] for n in names}
    channel_amax: dict[str, np.ndarray] = {}
    moments: dict[str, np.ndarray] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed)):
            shapes.setdefault(name, value.shape)
            a = np.abs(value)
            values[name].append(a.ravel())
            if name in weighted:
                channel_amax[name] = np.maximum(channel_amax.get(name, 0), a.reshape(-1, a.shape[-1]).max(axis=0))
                if with_moments:
                    moments[name] = moments.get(name, 0) + rounding.moments(value)
    joined = {}
    for name, parts in values.items():
        a = np.concatenate(parts)
        joined[name] = np.append(a[:: max(1, a.size // SAMPLE_CAP)], a.max())  # the sample keeps the maximum
    return Stats(joined, channel_amax, moments, shapes)


def amax(values: np.ndarray, method: str) -> float:
    """The clipping range of |x| for one activation tensor (scale = range / 127)."""
    top = float(values.max())
    if method == "minmax" or top == 0:
        return top
    if method == "percentile":
        return float(np.percentile(values, PERCENTILE))
    if method == "mse":  # least squared error of clip + round over the sample
        candidates = top * np.linspace(0.1, 1.0, 91)
        errors = [np.mean((np.minimum(np.round(values / (c / qdq.INT8_MAX)), qdq.INT8_MAX) * (c / qdq.INT8_MAX)
                           - values) ** 2) for c in candidates]
        return float(candidates[int(np.argmin(errors))])
    if method == "entropy":
        return _entropy_amax(values, top)
    raise ValueError(f"unknown calibration method {method!r} (choose from {', '.join(METHODS)})")


def _entropy_amax(values: np.ndarray, top: float) -> float:
    """The range whose int8 histogram is closest (KL divergence) to the histogram of |x|, clipped there."""
    hist, edges = np.histogram(values, bins=HISTOGRAM_BINS, range=(0, top))
    best, best_kl = top, np.inf
    for end in range(ENTROPY_LEVELS, HISTOGRAM_BINS + 1, 16):
        p = hist[:end].astype(np.float64)
        p[-1] += hist[end:].sum()  # what is clipped lands in the last bin
        q = np.zeros(end)
        for chunk in np.array_split(np.arange(end), ENTROPY_LEVELS):  # merged into int8 levels, spread back
            used = chunk[p[chunk] > 0]
            if used.size:
                q[used] = p[chunk].sum() / used.size
        nz = p > 0
        kl = float(np.sum(p[nz] / p.sum() * np.log((p[nz] / p.sum()) / (q[nz] / q.sum()))))
        if kl < best_kl:
            best, best_kl = float(edges[end]), kl
    return best


def ranges(stats: Stats, layers: list[qdq.Layer], methods: dict[str, str]) -> dict[str, float]:
    """amax per activation tensor, each by its layer's method (a tensor two layers read: the wider)."""
    found: dict[str, float] = {}
    for layer in layers:
        for name in layer.activations:
            found[name] = max(found.get(name, 0.0), amax(stats.values[name], methods[layer.name]))
    return found


def more_latents(jobs: tuple[Job, ...], count: int, base: int) -> tuple[Job, ...]:
    """`count` latents (seeds from `base`) at the jobs' sizes, cycled, and at TAIL_PSI or the
    jobs' widest psi if wider."""
    psi = max(TAIL_PSI, *(job.psi for job in jobs))
    return tuple(Job(base + i, psi, jobs[i % len(jobs)].width, jobs[i % len(jobs)].height) for i in range(count))


def range_jobs(jobs: tuple[Job, ...], count: int = RANGE_SEEDS) -> tuple[Job, ...]:
    """The jobs, then `count` more latents (seeds from RANGE_SEED_BASE)."""
    return jobs + more_latents(jobs, count, RANGE_SEED_BASE)


def plan_jobs(jobs: tuple[Job, ...], count: int = PLAN_SEEDS) -> tuple[Job, ...]:
    """The latents besides the jobs that the plan's curve is checked on (seeds from PLAN_SEED_BASE)."""
    return more_latents(jobs, count, PLAN_SEED_BASE)


def calibrate(models: dict[str, onnx.ModelProto], jobs: tuple[Job, ...] = DEFAULT_JOBS,
              probe: int = CALIBRATION_PROBE, target_psnr: float | None = None,
              range_seeds: int = RANGE_SEEDS, plan_seeds: int = PLAN_SEEDS,
              weight_bits: int = 7, stages: tuple[str, ...] = INT8_STAGES,
              exported: dict[str, onnx.ModelProto] | None = None) -> tuple[dict, dict]:
    """(Q/DQ graphs of the line and pixel stages, the plan's report), planned so that the
    image's uint8 PSNR stays >= `target_psnr` (None: every layer INT8) on the jobs' probes
    and on `plan_seeds` more latents' (PLAN_PROBE); activation ranges from the jobs and
    `range_seeds` more latents; weights `weight_bits` wide (calib/qdq.py WEIGHT_BITS: 7 runs
    exactly everywhere); INT8 only in `stages`, and with `exported` (the bundle's FP32 graphs)
    only in those whose planned INT8 graph runs faster on this CPU (calib/speed.py)."""
    from creps.calib.sensitivity import plan

    return plan(models, jobs, range_jobs(jobs, range_seeds), probe, target_psnr, weight_bits,
                plan_jobs(jobs, plan_seeds), stages, exported)


def with_float_stages(quantized: dict[str, onnx.ModelProto], exported: dict[str, onnx.ModelProto]) -> dict:
    """The Q/DQ graphs, where a stage has no INT8 layer its exported FP32 graph instead (as the
    plan's float layers it is the model exactly, and its modulation form is the faster one)."""
    return {s: m if qdq.summary(m)["int8_layers"] else exported[s] for s, m in quantized.items()}


def measure(models: dict[str, onnx.ModelProto], quantized: dict[str, onnx.ModelProto],
            jobs: tuple[Job, ...] = DEFAULT_JOBS, probe: int | None = None) -> dict:
    """Error of the Q/DQ graphs run in ONNX Runtime CPU against FP32, per job and worst."""
    reference, int8 = StageRunner(models), StageRunner({**models, **quantized})
    per_job = []
    for job in jobs:
        error = compare(reference.image(job, probe), int8.image(job, probe))
        per_job.append({**job.to_dict(), **error})
        log.info("int8 measured error, %s: %s", job.label, error)
    return {"worst": worst(per_job), "jobs": per_job}
