"""FP16 range analysis, the FP32-island decision, FP16 graphs and their predicted error.

Only the line and pixel stages get FP16 graphs: the mapping network costs nothing next to
them and every image value depends on its `ws`, so it stays FP32. Inside a stage a node
stays FP32 when one of these holds (the reason is recorded per node):

- `style path`: it does not depend on the spatial inputs (ys/xs or cols/rows): styles,
  demodulation sums, rsqrt, biases. These are [N, C]-sized, cost nothing, and the
  demodulation sum of squares is the classic FP16 overflow.
- `range`: its largest |value| over the sample jobs exceeds FP16_MAX / RANGE_HEADROOM,
  leaving 16x headroom for trained checkpoints whose activations run larger than ours.
- `phase`: it computes the argument of a Sin/Cos from the coordinates (or is the Sin):
  phases reach hundreds of radians (|2 pi t f| with bandwidth-10 frequencies and t up to
  2.5 on a panorama), where FP16 values are 0.25-0.5 rad apart. This holds for any
  weights, so it is a rule, not a measurement (a random-weight model can hide it).
- `error`: rounding this node alone to FP16 moves the image by more than SOLO_ERROR_LIMIT
  (a tenth of the 1e-2 bar).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from onnx import helper
from tqdm import tqdm

from creps.calib import emulate
from creps.calib.samples import DEFAULT_JOBS, Job, StageRunner, compare, worst
from creps.runtime.precision import REDUCED_STAGES
from creps.runtime.stages import spatial_inputs

log = logging.getLogger(__name__)

FP16_STAGES = REDUCED_STAGES  # the stages with fp16 graphs (the mapping stays fp32)
RANGE_HEADROOM = 16.0
SOLO_ERROR_LIMIT = 1e-3
PROBE = 24  # rows and columns per job in the analysis runs
SPATIAL_INPUTS = {s: spatial_inputs(s) for s in FP16_STAGES}  # ys/xs, cols/rows: what varies per pixel


@dataclass
class NodeStat:
    stage: str
    name: str
    op: str
    max_abs: float
    solo_error: float
    fp32_reason: str | None = None


@dataclass
class Fp16Plan:
    """Which nodes of each stage stay FP32, and the measurements behind it."""

    fp16_nodes: dict[str, list[str]]
    fp32_nodes: dict[str, list[str]]
    stats: list[NodeStat] = field(default_factory=list)

    def summary(self) -> dict:
        kept = [asdict(s) for s in self.stats if s.fp32_reason]
        return {
            "rules": {"range_limit": emulate.FP16_MAX / RANGE_HEADROOM, "solo_error_limit": SOLO_ERROR_LIMIT,
                      "style_path": "nodes independent of the spatial inputs stay FP32"},
            "fp16_node_count": {s: len(v) for s, v in self.fp16_nodes.items()},
            "fp32_node_count": {s: len(v) for s, v in self.fp32_nodes.items()},
            "fp32_compute_nodes": kept,
            "largest_fp16_values": sorted(
                ({"stage": s.stage, "name": s.name, "op": s.op, "max_abs": s.max_abs}
                 for s in self.stats if not s.fp32_reason), key=lambda d: -d["max_abs"])[:5],
        }


def _ranges(runner: StageRunner, models, candidates, jobs, probe) -> dict[tuple[str, str], float]:
    """Largest |value| of each (stage, tensor) over the jobs (FP32 run, probe grid)."""
    outputs = {stage: [o for n in nodes for o in n.output] for stage, nodes in candidates.items()}
    sessions = {stage: emulate.session(emulate.with_outputs(models[stage], outputs[stage])) for stage in FP16_STAGES}
    ranges: dict[tuple[str, str], float] = {}
    for job in jobs:
        ws = runner.ws(job)
        ys, xs = job.coords(probe)
        values = sessions["lines"].run(["cols", "rows", *outputs["lines"]], {"ws": ws, "ys": ys, "xs": xs})
        cols, rows = values[:2]
        pix = sessions["pixels"].run(outputs["pixels"], {"ws": ws, "cols": cols, "rows": rows})
        named = [("lines", o) for o in outputs["lines"]] + [("pixels", o) for o in outputs["pixels"]]
        for key, value in zip(named, values[2:] + pix):
            ranges[key] = max(ranges.get(key, 0.0), emulate.max_abs(value))
    return ranges


def _solo_errors(runner: StageRunner, models, candidates, jobs, probe) -> dict[tuple[str, str], float]:
    """Image max abs error when only one node rounds to FP16, worst over the jobs.

    One switchable session per stage; each run turns on one node's rounding.
    """
    inputs = []
    for job in jobs:
        ws = runner.ws(job)
        ys, xs = job.coords(probe)
        cols, rows = runner.lines(ws, ys, xs)
        inputs.append((ws, ys, xs, cols, rows, runner.pixels(ws, cols, rows)))
    errors = {}
    total = sum(len(v) for v in candidates.values())
    with tqdm(total=total, desc="fp16 solo errors", unit="node", leave=False) as bar:
        for stage, nodes in candidates.items():
            names = [n.name for n in nodes]
            sess = emulate.session(emulate.with_fp16_rounding(models[stage], names, switchable=True))
            for k, name in enumerate(names):
                flags = emulate.switches(len(names), {k})
                worst_err = 0.0
                for ws, ys, xs, cols, rows, ref in inputs:
                    if stage == "lines":
                        c, r = sess.run(["cols", "rows"], {"ws": ws, "ys": ys, "xs": xs, **flags})
                        img = runner.pixels(ws, c, r)
                    else:
                        img = sess.run(["img"], {"ws": ws, "cols": cols, "rows": rows, **flags})[0]
                    worst_err = max(worst_err, emulate.max_abs(img - ref))
                errors[stage, name] = worst_err
                bar.update()
    return errors


def phase_nodes(model: onnx.ModelProto, candidates: set[str]) -> set[str]:
    """Candidate nodes on a path into a Sin/Cos (the periodic functions and their arguments)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    found, todo = set(), [n for n in model.graph.node if n.op_type in ("Sin", "Cos") and n.name in candidates]
    while todo:
        node = todo.pop()
        if node.name in found or node.name not in candidates:
            continue
        found.add(node.name)
        todo += [producers[i] for i in node.input if i in producers]
    return found


def analyse(models: dict[str, onnx.ModelProto], jobs: tuple[Job, ...] = DEFAULT_JOBS,
            probe: int = PROBE) -> Fp16Plan:
    """Measure ranges and per-node FP16 error on `jobs` and decide the FP32 islands."""
    runner = StageRunner(models)
    spatial = {s: emulate.dependent_nodes(models[s], SPATIAL_INPUTS[s]) for s in FP16_STAGES}
    candidates = {s: emulate.compute_nodes(models[s], spatial[s]) for s in FP16_STAGES}
    log.info("fp16 analysis: %s candidate nodes", {s: len(v) for s, v in candidates.items()})
    ranges = _ranges(runner, models, candidates, jobs, probe)
    solo = _solo_errors(runner, models, candidates, jobs, probe)
    stats, fp32 = [], {s: [] for s in FP16_STAGES}
    for stage in FP16_STAGES:
        phases = phase_nodes(models[stage], spatial[stage])
        for node in candidates[stage]:
            value = max(ranges.get((stage, o), 0.0) for o in node.output)
            stat = NodeStat(stage, node.name, node.op_type, value, solo[stage, node.name])
            if node.name in phases:
                stat.fp32_reason = "phase"
            elif value > emulate.FP16_MAX / RANGE_HEADROOM:
                stat.fp32_reason = "range"
            elif stat.solo_error > SOLO_ERROR_LIMIT:
                stat.fp32_reason = "error"
            if stat.fp32_reason:
                fp32[stage].append(node.name)
            stats.append(stat)
    fp16 = {s: sorted(emulate.with_movement_nodes(models[s], {n.name for n in candidates[s]} - set(fp32[s])))
            for s in FP16_STAGES}
    fp32 = {s: sorted(n.name for n in models[s].graph.node if n.name not in fp16[s]) for s in FP16_STAGES}
    return Fp16Plan(fp16, fp32, stats)


def predict(models: dict[str, onnx.ModelProto], plan: Fp16Plan, jobs: tuple[Job, ...] = DEFAULT_JOBS,
            probe: int | None = None) -> dict:
    """Predicted error of the FP16 graphs against FP32 on `jobs` (full images unless `probe`)."""
    reference = StageRunner(models)
    rounded = StageRunner({**models, **{s: emulate.with_fp16_rounding(models[s], set(plan.fp16_nodes[s]))
                                        for s in FP16_STAGES}})
    per_job = []
    for job in tqdm(jobs, desc="fp16 prediction", unit="job", leave=False):
        error = compare(reference.image(job, probe), rounded.image(job, probe))
        per_job.append({**job.to_dict(), **error})
        log.info("fp16 predicted error, %s: %s", job.label, error)
    return {"worst": worst(per_job), "jobs": per_job}


def to_fp16(model: onnx.ModelProto, fp16_nodes: list[str]) -> onnx.ModelProto:
    """The FP16 graph: float32 inputs/outputs, `fp16_nodes` in FP16, the rest (the islands) FP32.

    Casts go exactly where the emulation rounds: on each float tensor crossing from FP32
    into an FP16 node (weights become FP16 initializers) and from FP16 back into an FP32
    node or a graph output. onnxconverter-common's converter was tried first; with a node
    block list it declares float16 graph outputs behind its own cast to float16, so the
    rewrite is done here on the ONNX protobuf.
    """
    fp16 = set(fp16_nodes)
    floats = emulate.float_tensors(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    initializers = {t.name: t for t in graph.initializer}
    producer_fp16 = {o for n in model.graph.node if n.name in fp16 for o in n.output}
    graph_outputs = {o.name for o in graph.output}
    to_half: dict[str, str] = {}  # FP32 tensor -> its FP16 copy
    to_float: dict[str, str] = {}  # FP16 tensor -> its FP32 copy
    nodes = []

    def cast(src: str, dst: str, to: int) -> None:
        nodes.append(helper.make_node("Cast", [src], [dst], name=f"{dst}__cast", to=to))

    for node in model.graph.node:
        node = onnx.NodeProto.FromString(node.SerializeToString())
        if node.name in fp16:
            for i, name in enumerate(node.input):
                if name not in floats or name in producer_fp16:
                    continue
                if name not in to_half:
                    to_half[name] = f"{name}__fp16"
                    if name in initializers:
                        values = onnx.numpy_helper.to_array(initializers[name]).astype(np.float16)
                        graph.initializer.append(onnx.numpy_helper.from_array(values, to_half[name]))
                    else:
                        cast(name, to_half[name], emulate.FLOAT16)
                node.input[i] = to_half[name]
            for i, name in enumerate(node.output):
                if name in graph_outputs:  # the graph output stays float32 under its name
                    node.output[i] = f"{name}__fp16"
                    nodes.append(node)
                    node = None
                    cast(f"{name}__fp16", name, emulate.FLOAT)
                    break
            if node is not None:
                nodes.append(node)
            continue
        for i, name in enumerate(node.input):
            if name in producer_fp16:
                if name not in to_float:
                    to_float[name] = f"{name}__fp32"
                    cast(name, to_float[name], emulate.FLOAT)
                node.input[i] = to_float[name]
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # types changed; shape inference recomputes them
    used = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(out)
    onnx.shape_inference.infer_shapes(out, strict_mode=True)  # every node's input types agree
    return out
