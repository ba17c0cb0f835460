"""The mixed INT8 plan: each layer's error contribution measured, INT8 in that order up to a target.

Everything is measured on the calibration jobs' probes (rows and columns evenly spaced,
coordinate extremes included: the stages are pointwise, so a probe sees exactly the
values of the full image there), as the uint8 image against FP32:

1. Options: for each SmoothQuant strength in `ALPHAS` (calib/smooth.py) and each range
   method in `SEARCH_METHODS` (calib/int8.py; min-max only, see there), one graph per stage with every layer's Q/DQ
   behind a switch (calib/qdq.py `with_qdq(switchable=True)`), so one session runs any
   choice of INT8 layers (weights rounded for their calibration inputs, calib/rounding.py). Each layer alone in INT8 ("solo") gives its error under each
   option, worst over the jobs and the plan's latents (step 2); the layer keeps the option
   with the least. (On the jobs alone, layers whose ranges the plan's latents exceed looked
   harmless: on the published configuration one at 63 dB alone took the curve from 55 to 45 dB.)
2. Order: what a layer in float costs is its work, so layers go to INT8 in order of solo
   error per multiply-add (the image MSE it adds alone over its multiply-adds on the first
   job's whole image), least first: the 1024-wide line layers before a pixel decoder's
   64-wide ones of like error, and a 3-wide output layer, whose INT8 saves nothing, last.
   The image error of the first k layers in INT8 together, for every k, is the plan's
   curve: the worst over the jobs and more latents on small probes (calib/int8.py
   `plan_jobs`), so that the plan holds for latents it was not chosen on.
3. Plan: the longest prefix whose worst uint8 PSNR is >= target + `MARGIN_DB` (the
   margin covers the pixels the probe does not see); the remaining layers stay float,
   the least work in float that the curve allows.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
from tqdm import tqdm

from creps.calib import int8, qdq, rounding, smooth, speed
from creps.calib.samples import Job, StageRunner, compare, worst

log = logging.getLogger(__name__)

ALPHAS = (0.0, 0.5, 1.0)  # 0: not migrated, the only option of a layer whose input nothing can absorb
# Ranges that clip (percentile, mse; entropy lost on every layer) won on the calibration latents
# and failed on new ones: on the bundled default model the target-45 plan chosen among
# min-max, percentile and mse gave 38.7 dB on held-out seed 2 (seeds 2-7, psi 1 and 0.7),
# min-max alone 45.2 dB worst, with 15 rather than 17 layers in INT8 (benchmarks/results/int8.json).
SEARCH_METHODS = ("minmax",)
MARGIN_DB = 0.5


class Switched:
    """The pipeline with switchable Q/DQ line and pixel graphs; `image` with a chosen set of INT8 layers."""

    def __init__(self, models: dict[str, onnx.ModelProto], layers: dict[str, list[qdq.Layer]],
                 ranges: dict[str, dict[str, float]], weight_bits: int, rounded: dict[str, dict[str, np.ndarray]]):
        self.layers = layers
        self.runner = StageRunner({**models, **{s: qdq.with_qdq(models[s], layers[s], ranges[s], weight_bits,
                                                                switchable=True, rounded=rounded[s])
                                                for s in int8.INT8_STAGES}})

    def image(self, job: Job, probe: int, on: set[tuple[str, str]]) -> np.ndarray:
        feeds = {s: qdq.switches(self.layers[s], {name for stage, name in on if stage == s}) for s in self.layers}
        sessions = self.runner.sessions
        ws = self.runner.ws(job)
        ys, xs = job.coords(probe)
        cols, rows = sessions["lines"].run(["cols", "rows"], {"ws": ws, "ys": ys, "xs": xs, **feeds["lines"]})
        return sessions["pixels"].run(["img"], {"ws": ws, "cols": cols, "rows": rows, **feeds["pixels"]})[0]


def score(error: dict) -> tuple[float, float]:
    """Sort key, higher is better: uint8 PSNR, then float PSNR (None: identical, best)."""
    return tuple(math.inf if error[k] is None else error[k] for k in ("uint8_psnr_db", "psnr_db"))


def harm(error: dict) -> float:
    """The image's MSE (over the squared peak) that a `compare` result says: 10^(-PSNR/10) of the float image, 0 when identical."""
    return 0.0 if error["psnr_db"] is None else 10 ** (-error["psnr_db"] / 10)


def work(models: dict[str, onnx.ModelProto], layers: dict[str, list[qdq.Layer]], stats: dict[str, int8.Stats],
         job: Job, probe: int) -> dict[tuple[str, str], float]:
    """Multiply-adds of each (stage, layer) on `job`'s whole image: the rows of its input on the
    job's probe (the first calibration feed, `stats` shapes) times its output width, scaled up
    along the stage's pointwise axes (lines: H + W positions, pixels: H x W)."""
    ys, xs = job.coords(probe)
    scale = {"lines": (job.height + job.width) / (len(ys) + len(xs)),
             "pixels": job.height * job.width / (len(ys) * len(xs))}
    found = {}
    for s in int8.INT8_STAGES:
        consts = qdq.constants(models[s])
        shapes = stats[s].shapes
        for layer in layers[s]:
            width = (consts[layer.weight].dims[layer.axis] if layer.weight is not None
                     else shapes[layer.activations[1]][-1])
            found[(s, layer.name)] = float(np.prod(shapes[layer.activations[0]])) * width * scale[s]
    return found


class Probe:
    """The FP32 images of (job, probe) pairs, and the worst error of a switched pipeline against them."""

    def __init__(self, models: dict[str, onnx.ModelProto], probes: list[tuple[Job, int]]):
        self.probes = probes
        reference = StageRunner(models)
        self.images = [reference.image(job, probe) for job, probe in probes]

    def error(self, pipeline: Switched, on: set[tuple[str, str]]) -> dict:
        return worst([compare(ref, pipeline.image(job, probe, on)) for ref, (job, probe) in zip(self.images,
                                                                                                self.probes)])


def migrated(models: dict, layers: dict, stats: dict, alphas: dict[str, float]) -> tuple[dict, dict]:
    """(models with the layers' outliers migrated, {stage: {layer: fold kind}})."""
    out, folds = dict(models), {}
    for stage in int8.INT8_STAGES:
        out[stage], folds[stage] = smooth.migrate(models[stage], stage, layers[stage],
                                                  alphas.get(stage, {}), stats[stage].channel_amax)
    return out, folds


def stage_layers_and_stats(models: dict, feeds: dict, with_moments: bool = True) -> tuple[dict, dict]:
    layers = {s: qdq.layers(models[s], s) for s in int8.INT8_STAGES}
    return layers, {s: int8.activation_stats(models[s], layers[s], feeds[s], with_moments) for s in int8.INT8_STAGES}


def rounded_weights(models: dict, layers: dict, stats: dict, weight_bits: int) -> dict[str, dict[str, np.ndarray]]:
    """Per stage, the int8 values of every layer's weight, rounded for its calibration inputs (calib/rounding.py)."""
    return {s: rounding.rounded_weights(models[s], layers[s], stats[s].moments, weight_bits)
            for s in int8.INT8_STAGES}


@dataclass
class Search:
    """What the measurements found: the migrated graphs, their layers and ranges, the weights'
    width and int8 values, the layers in INT8 order (least error per multiply-add first) and
    those left out, each layer's row of the table, the options tried, the curve, and what
    remakes the curve."""

    models: dict[str, onnx.ModelProto]
    layers: dict[str, list[qdq.Layer]]
    ranges: dict[str, dict[str, float]]
    weight_bits: int
    rounded: dict[str, dict[str, np.ndarray]]
    order: list[tuple[str, str]]
    excluded: list[tuple[str, str]]  # the layers of stages not given INT8, always float
    rows: dict[tuple[str, str], dict]
    tried: list[dict]
    pipeline: Switched
    probes: Probe
    curve: list[dict] = field(default_factory=list)

    @property
    def table(self) -> list[dict]:
        return [self.rows[key] for key in self.order + self.excluded]

    def remake_curve(self) -> None:
        """The image error of the first k layers of the order in INT8 together, for every k."""
        curve, on = [], set()
        for key in tqdm(self.order, desc="int8 plan", unit="layer", leave=False):
            on.add(key)
            curve.append({"int8_layers": len(on), "added": f"{key[0]}/{key[1]}",
                          **self.probes.error(self.pipeline, on)})
        self.curve = curve

    def without(self, stages: set[str]) -> Search:
        """The search with `stages`' layers out of the order (always float), its curve remade."""
        out = replace(self, order=[k for k in self.order if k[0] not in stages],
                      excluded=self.excluded + [k for k in self.order if k[0] in stages])
        out.remake_curve()
        return out

    def graphs(self, k: int) -> dict[str, onnx.ModelProto]:
        """Q/DQ line and pixel graphs with the first `k` layers of the order in INT8 (checked by the rules)."""
        chosen = set(self.order[:k])
        quantized = {}
        for s in int8.INT8_STAGES:
            quantized[s] = qdq.with_qdq(self.models[s], [l for l in self.layers[s] if (s, l.name) in chosen],
                                        self.ranges[s], self.weight_bits, rounded=self.rounded[s])
            qdq.check(quantized[s], s)
        return quantized

    def longest(self, target_psnr: float | None) -> int:
        """The most layers in INT8 whose curve point holds target + MARGIN_DB (None: every layer)."""
        if target_psnr is None:
            return len(self.order)
        goal = target_psnr + MARGIN_DB
        return max([0] + [c["int8_layers"] for c in self.curve
                          if c["uint8_psnr_db"] is None or c["uint8_psnr_db"] >= goal])

    def settle(self, target_psnr: float | None, exported: dict[str, onnx.ModelProto] | None,
               job: Job) -> tuple[Search, int, dict[str, onnx.ModelProto], dict | None]:
        """(the search, k, its Q/DQ graphs, the stage timings): the longest prefix holding the
        target, where each stage with INT8 layers runs at least speed.MIN_SPEEDUP times its
        exported FP32 graph on this CPU (calib/speed.py); a stage that does not leaves the order
        and the curve is remade, so its error budget goes to the others. `exported` None: no
        timing, every stage kept."""
        found = self
        while True:
            k = found.longest(target_psnr)
            graphs = found.graphs(k)
            if exported is None:
                return found, k, graphs, None
            timings = speed.stage_speedups(exported, int8.with_float_stages(graphs, exported), job)
            chosen = {s for s, _ in found.order[:k]}
            ordered = {s for s, _ in found.order}
            slow = {s for s in ordered if s not in chosen or timings[s]["speedup"] < speed.MIN_SPEEDUP}
            if not slow or not found.order:
                return found, k, graphs, timings
            log.info("int8: %s out of the plan (INT8 at %s)", ", ".join(sorted(slow)),
                     ", ".join(f"{s} x{timings[s]['speedup']:.2f}" for s in sorted(slow)))
            found = found.without(slow)


def search(models: dict[str, onnx.ModelProto], jobs: tuple[Job, ...], range_jobs: tuple[Job, ...],
           probe: int, weight_bits: int, plan_jobs: tuple[Job, ...] = (),
           methods: tuple[str, ...] | None = None, stages: tuple[str, ...] = int8.INT8_STAGES) -> Search:
    """Steps 1 and 2 of the module docstring, with `weight_bits`-wide weights, each layer's range
    by the best of `methods` (calib/int8.py METHODS; default SEARCH_METHODS: benchmarks/int8.py
    --methods re-measures the others). Ranges come from `range_jobs` (`jobs` on their probes,
    then many latents on small probes: a range must hold for seeds it never saw); the solo
    errors and the curve are the worst over `jobs`' probes and `plan_jobs`' (PLAN_PROBE). Only
    the layers of `stages` go into the order (calib/speed.py: where INT8 is faster); the others
    are measured for the table and stay float."""
    feeds = int8.calibration_feeds(models, range_jobs[:len(jobs)], probe)
    more = int8.calibration_feeds(models, range_jobs[len(jobs):], int8.RANGE_PROBE)
    feeds = {s: feeds[s] + more[s] for s in feeds}
    base_layers, base_stats = stage_layers_and_stats(models, feeds, with_moments=False)  # for migration only
    keys = [(s, layer.name) for s in int8.INT8_STAGES for layer in base_layers[s]]
    ops = {(s, layer.name): layer.op for s in int8.INT8_STAGES for layer in base_layers[s]}
    foldable = {(s, layer.name) for s in int8.INT8_STAGES for layer in base_layers[s]
                if smooth.fold_of(models[s], s, layer) is not None}
    # Solo errors and the curve on the same images: a layer whose ranges new latents exceed must look it.
    probes = Probe(models, [(job, probe) for job in jobs] + [(job, int8.PLAN_PROBE) for job in plan_jobs])
    solo: dict[tuple, dict] = {}  # (stage, layer) -> {(alpha, method): error}
    tried = []
    options = [(a, m) for a in ALPHAS for m in methods or SEARCH_METHODS]
    # A layer is measured under the options that change it: every alpha > 0 if it can be migrated, else alpha 0.
    def measured(alpha: float, key: tuple) -> bool:
        return alpha > 0 if key in foldable and max(ALPHAS) > 0 else alpha == 0

    runs = sum(1 for a, _ in options for key in keys if measured(a, key)) + len(options)
    with tqdm(total=runs, desc="int8 sensitivity", unit="run", leave=False) as bar:
        for alpha, method in options:
            candidate, folds = migrated(models, base_layers, base_stats,
                                        {s: {l.name: alpha for l in base_layers[s]} for s in int8.INT8_STAGES})
            layers, stats = stage_layers_and_stats(candidate, feeds)
            ranges = {s: int8.ranges(stats[s], layers[s], {l.name: method for l in layers[s]})
                      for s in int8.INT8_STAGES}
            pipeline = Switched(candidate, layers, ranges, weight_bits,
                                rounded_weights(candidate, layers, stats, weight_bits))
            for key in keys:
                if measured(alpha, key):
                    solo.setdefault(key, {})[(alpha, method)] = probes.error(pipeline, {key})
                    bar.update()
            every = probes.error(pipeline, set(keys))
            bar.update()
            tried.append({"alpha": alpha, "method": method, "all_int8": every,
                          "migrated_layers": sum(len(f) for f in folds.values())})
            log.info("int8 option alpha %g, %s: every layer INT8 gives %s", alpha, method, every)
    best = {key: max(found, key=lambda option: score(found[option])) for key, found in solo.items()}
    alphas = {s: {name: best[(st, name)][0] for st, name in keys if st == s} for s in int8.INT8_STAGES}
    final, folds = migrated(models, base_layers, base_stats, alphas)
    layers, stats = stage_layers_and_stats(final, feeds)
    ranges = {s: int8.ranges(stats[s], layers[s], {l.name: best[(s, l.name)][1] for l in layers[s]})
              for s in int8.INT8_STAGES}
    rounded = rounded_weights(final, layers, stats, weight_bits)
    pipeline = Switched(final, layers, ranges, weight_bits, rounded)
    macs = work(final, layers, stats, jobs[0], probe)
    ranked = sorted(keys, key=lambda key: harm(solo[key][best[key]]) / max(macs[key], 1.0))
    rows = {(s, name): {"stage": s, "layer": name, "op": ops[(s, name)], "alpha": best[(s, name)][0],
                        "migration": folds[s].get(name), "method": best[(s, name)][1],
                        "solo_uint8_psnr_db": solo[(s, name)][best[(s, name)]]["uint8_psnr_db"],
                        "solo_psnr_db": solo[(s, name)][best[(s, name)]]["psnr_db"], "macs": macs[(s, name)]}
            for s, name in ranked}
    found = Search(final, layers, ranges, weight_bits, rounded, [k for k in ranked if k[0] in stages],
                   [k for k in ranked if k[0] not in stages], rows, tried, pipeline, probes)
    found.remake_curve()
    return found


def plan(models: dict[str, onnx.ModelProto], jobs: tuple[Job, ...], range_jobs: tuple[Job, ...], probe: int,
         target_psnr: float | None, weight_bits: int, plan_jobs: tuple[Job, ...] = (),
         stages: tuple[str, ...] = int8.INT8_STAGES,
         exported: dict[str, onnx.ModelProto] | None = None) -> tuple[dict[str, onnx.ModelProto], dict]:
    """(Q/DQ line and pixel graphs, the report: options tried, per-layer sensitivity, curve, float
    layers), INT8 only in `stages`, and with `exported` (the FP32 graphs) only in those it makes
    faster here (Search.settle)."""
    found = search(models, jobs, range_jobs, probe, weight_bits, plan_jobs, stages=stages)
    found, k, graphs, timings = found.settle(target_psnr, exported, jobs[0])
    stages = tuple(s for s in int8.INT8_STAGES if any(key[0] == s for key in found.order))
    float_layers = [f"{s}/{name}" for s, name in found.order[k:] + found.excluded]
    in_float = sum(row["macs"] for row in found.table[k:]) / max(sum(row["macs"] for row in found.table), 1.0)
    report = {"target_uint8_psnr_db": target_psnr, "margin_db": MARGIN_DB, "probe": probe, "weight_bits": weight_bits,
              "weight_rounding": {"method": "gptq", "damp": rounding.DAMP},
              "int8_stages": list(stages), "stage_speed": timings, "float_work_share": in_float,
              "plan_jobs": [j.to_dict() for j in plan_jobs], "plan_probe": int8.PLAN_PROBE,
              "options_tried": found.tried,
              "sensitivity": [{**row, "int8": i < k} for i, row in enumerate(found.table)],
              "curve": found.curve, "int8_layers": k, "layers": len(found.table), "float_layers": float_layers}
    log.info("int8 plan: %d of %d layers in INT8 (target %s dB), %.1f%% of the work in float: %s", k,
             len(found.table), target_psnr, 100 * in_float, ", ".join(float_layers) or "none")
    return graphs, report
