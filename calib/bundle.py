"""Add FP16 and INT8 graphs to a bundle, with their predicted / measured error in the manifest.

Graph keys follow `creps.runtime.stages.graph_key`: `lines.fp16`, `pixels.fp16`,
`lines.int8`, `pixels.int8`. All graphs are judged against the precision bars
(calib/bars.py) before any is written; each graph file is written atomically, then the
manifest, so a refusal or an interrupted run leaves the bundle as it was (at most an
unlisted file).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import onnx

from creps.calib import fp16, int8, qdq
from creps.calib.bars import PRECISION_BARS, psnr_key, shortfalls
from creps.calib.samples import DEFAULT_JOBS, Job, StageRunner, check_reference
from creps.errors import BundleError, CrepsError
from creps.export.signature import io_signature
from creps.files import atomic_path
from creps.runtime.backends import available_cores
from creps.runtime.bundle import file_entry, read_bundle, sha256_file, write_manifest
from creps.runtime.cpu import int8_kernel_class
from creps.runtime.stages import RUN_STAGES, graph_key

log = logging.getLogger(__name__)

FINITE_PROBE = 16  # rows and columns per job of the up-front check that the FP32 graphs give finite images


class PrecisionError(CrepsError):
    """FP16 or INT8 graphs refused: their images hold NaN or Inf, or miss the precision bar."""


def check_source(bundle, checkpoint: str | os.PathLike | None) -> None:
    """Refuse a checkpoint other than the one the bundle was exported from (its graphs would be another model's)."""
    recorded = (bundle.manifest.get("source") or {}).get("sha256")
    if checkpoint is not None and recorded and sha256_file(checkpoint) != recorded:
        name = bundle.manifest["source"].get("file", f"sha256 {recorded[:12]}")
        raise BundleError(f"{checkpoint} is not the checkpoint {bundle.path} was exported from ({name}): "
                          "pass that one as --network")


def load_models(bundle) -> dict[str, onnx.ModelProto]:
    return {stage: onnx.load(bundle.graph_path(stage)) for stage in RUN_STAGES}


def activation_form_models(bundle, G) -> dict[str, onnx.ModelProto]:
    """The bundle's graphs with W constant in every modulated layer (what INT8 needs).

    Graphs exported in the `folded` form are re-exported from `G` in the `activation`
    form; without `G` that is an error naming the option to pass.
    """
    models = load_models(bundle)
    folded = [s for s in ("lines", "pixels") if bundle.graph(s).get("modulation") == "folded"]
    if not folded:
        return models
    if G is None:
        raise BundleError(f"{bundle.path}: the {' and '.join(folded)} graphs fold the styles into per-sample "
                          "weights, which INT8 cannot quantize per channel; pass the checkpoint (--network) "
                          "so they can be re-exported for calibration")
    from creps.export.graphs import export_stage

    with tempfile.TemporaryDirectory() as tmp:
        for stage in folded:
            opset = bundle.graph(stage).get("opset", 18)
            models[stage] = export_stage(G, stage, Path(tmp) / f"{stage}.onnx", opset, modulation="activation")
    return models


def _write_graph(bundle, manifest: dict, stage: str, precision: str, model: onnx.ModelProto, **fields) -> None:
    file = f"{stage}.{precision}.onnx"
    with atomic_path(bundle.path / file) as tmp:
        onnx.save(model, tmp)
    source = bundle.graph(stage)
    manifest["graphs"][graph_key(stage, precision)] = file_entry(
        bundle.path, file, precision, stage=stage, opset=source.get("opset"), **io_signature(model), **fields)


def check_fp32_finite(bundle, models: dict[str, onnx.ModelProto], jobs: tuple[Job, ...]) -> None:
    """Refuse a bundle whose FP32 graphs give NaN or Inf on the jobs (a cheap probe, before any long work)."""
    runner = StageRunner(models)
    for job in jobs:
        check_reference(runner.image(job, FINITE_PROBE), f"{bundle.path}, {job.label}")


def judge(precision: str, error: dict, bundle, keep_below_bar: bool) -> None:
    """Refuse graphs with non-finite images, and graphs below the precision bar unless `keep_below_bar`
    (then warn): before anything is written, so a refusal leaves the bundle as it was."""
    if error["non_finite"]:
        raise PrecisionError(f"{precision} graphs refused: {100 * error['non_finite']:.3g}% of their image values "
                             f"are NaN or Inf (the FP32 graphs' are finite); nothing written to {bundle.path}")
    misses = shortfalls(precision, error)
    if not misses:
        return
    what = f"{precision} graphs below the {precision} bar ({', '.join(misses)} on the worst sample job)"
    if not keep_below_bar:
        raise PrecisionError(f"{what}; nothing written to {bundle.path} (creps-calib --force keeps them)")
    log.warning("keeping %s because of --force", what)


def cpu_speedup(int8_plan: dict, stage: str) -> dict | None:
    """The stage's INT8 speed-up over its FP32 graph as the plan timed it on this CPU, with what
    it holds for (runtime/cpu.py int8_kernel_class: `auto` takes int8 on a CPU like it); None
    when the stages were named rather than timed."""
    timing = (int8_plan.get("stage_speed") or {}).get(stage)
    if timing is None:
        return None
    return {"speedup": round(timing["speedup"], 3), **int8_kernel_class(), "cores": available_cores()}


def calibrate_bundle(bundle_dir: str | os.PathLike, fp16_graphs: bool = True, int8_graphs: bool = False,
                     G=None, jobs: tuple[Job, ...] = DEFAULT_JOBS, error_jobs: tuple[Job, ...] | None = None,
                     source: str | os.PathLike | None = None, keep_below_bar: bool = False,
                     target_psnr: float | None = PRECISION_BARS["int8"][psnr_key("int8")],
                     range_seeds: int = int8.RANGE_SEEDS, plan_seeds: int = int8.PLAN_SEEDS,
                     weight_bits: int = 7, int8_stages: tuple[str, ...] | None = None) -> dict:
    """Write the requested FP16 / INT8 graphs into the bundle; returns the report.

    `jobs` drive the FP16 analysis and the INT8 calibration; the error against FP32 is
    reported on full images of `error_jobs` (default: the same jobs) and judged against
    PRECISION_BARS. INT8 keeps in float the fewest layers that hold the images' uint8 PSNR
    at `target_psnr` (None: every layer INT8), its activation ranges taken from the jobs and
    `range_seeds` more latents, the plan checked on `plan_seeds` more, its weights
    `weight_bits` wide (recorded: runtime/cpu.py says where 8 bits run exactly), INT8 only in
    `int8_stages` (None: those whose planned INT8 graph runs faster on this CPU, calib/speed.py). A stage
    the plan keeps wholly in float gets its FP32 graph as its int8 graph. `source` is the checkpoint `G` came from: refused unless it is the
    bundle's. Everything that can be refused is, before the long work or before writing.
    """
    error_jobs = error_jobs or jobs
    bundle = read_bundle(bundle_dir)
    check_source(bundle, source)
    models = load_models(bundle)
    activation = activation_form_models(bundle, G) if int8_graphs else None
    check_fp32_finite(bundle, models, jobs)
    manifest = {**bundle.manifest, "graphs": dict(bundle.manifest["graphs"])}
    report = {"jobs": [j.to_dict() for j in jobs], "error_jobs": [j.to_dict() for j in error_jobs],
              "bars": {p: PRECISION_BARS[p] for p, wanted in (("fp16", fp16_graphs), ("int8", int8_graphs)) if wanted}}
    graphs = []  # (stage, precision, model, manifest fields), written once all are judged
    if fp16_graphs:
        plan = fp16.analyse(models, jobs)
        predicted = fp16.predict(models, plan, error_jobs)
        judge("fp16", predicted["worst"], bundle, keep_below_bar)
        for stage in fp16.FP16_STAGES:
            graphs.append((stage, "fp16", fp16.to_fp16(models[stage], plan.fp16_nodes[stage]),
                           {"fp32_islands": [s.name for s in plan.stats if s.stage == stage and s.fp32_reason],
                            "predicted_error": predicted["worst"]}))
        report["fp16"] = {"plan": plan.summary(), "predicted_error": predicted}
    if int8_graphs:
        quantized, int8_plan = int8.calibrate(activation, jobs, target_psnr=target_psnr, range_seeds=range_seeds,
                                              plan_seeds=plan_seeds, weight_bits=weight_bits,
                                              stages=int8_stages or int8.INT8_STAGES,
                                              exported=models if int8_stages is None else None)
        quantized = int8.with_float_stages(quantized, models)
        measured = int8.measure(activation, quantized, error_jobs)
        judge("int8", measured["worst"], bundle, keep_below_bar)
        kept_float = {s: [f.split("/", 1)[1] for f in int8_plan["float_layers"] if f.startswith(f"{s}/")]
                      for s in quantized}
        for stage, model in quantized.items():
            in_int8 = model is not models[stage]
            modulation = "activation" if in_int8 else bundle.graph(stage).get("modulation")
            graphs.append((stage, "int8", model, {"modulation": modulation, "qdq": qdq.summary(model),
                                                  "weight_bits": weight_bits, "target_uint8_psnr_db": target_psnr,
                                                  "float_layers": kept_float[stage],
                                                  "cpu_speedup": cpu_speedup(int8_plan, stage) if in_int8 else None,
                                                  "measured_error": measured["worst"]}))
        report["int8"] = {"qdq": {s: qdq.summary(m) for s, m in quantized.items()}, "plan": int8_plan,
                          "measured_error": measured}
    for stage, precision, model, fields in graphs:
        _write_graph(bundle, manifest, stage, precision, model, **fields)
    manifest.setdefault("verification", {})
    manifest["verification"] = {**manifest["verification"], "precision": report}
    write_manifest(bundle.path, manifest)
    return report
