"""Add FP16 and INT8 graphs to a bundle, with their predicted / measured error in the manifest.

Graph keys follow `creps.runtime.bundle.graph_key`: `lines.fp16`, `pixels.fp16`,
`lines.int8`, `pixels.int8`. Each graph file is written atomically, then the manifest,
so an interrupted run leaves the bundle as it was (at most an unlisted file).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import onnx

from creps.calib import fp16, int8
from creps.calib.samples import DEFAULT_JOBS, Job
from creps.errors import BundleError
from creps.export.signature import io_signature
from creps.files import atomic_path
from creps.runtime.bundle import file_entry, graph_key, read_bundle, write_manifest

log = logging.getLogger(__name__)

STAGES = ("mapping", "lines", "pixels")


def load_models(bundle) -> dict[str, onnx.ModelProto]:
    return {stage: onnx.load(bundle.graph_path(stage)) for stage in STAGES}


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


def calibrate_bundle(bundle_dir: str | os.PathLike, fp16_graphs: bool = True, int8_graphs: bool = False,
                     G=None, jobs: tuple[Job, ...] = DEFAULT_JOBS, error_jobs: tuple[Job, ...] | None = None) -> dict:
    """Write the requested FP16 / INT8 graphs into the bundle; returns the report.

    `jobs` drive the FP16 analysis and the INT8 calibration; the error against FP32 is
    reported on full images of `error_jobs` (default: the same jobs).
    """
    error_jobs = error_jobs or jobs
    bundle = read_bundle(bundle_dir)
    manifest = {k: v for k, v in bundle.manifest.items() if k not in ("format", "format_version")}
    manifest["graphs"] = dict(manifest["graphs"])
    report = {"jobs": [j.to_dict() for j in jobs], "error_jobs": [j.to_dict() for j in error_jobs]}
    if fp16_graphs:
        models = load_models(bundle)
        plan = fp16.analyse(models, jobs)
        predicted = fp16.predict(models, plan, error_jobs)
        for stage in fp16.FP16_STAGES:
            _write_graph(bundle, manifest, stage, "fp16", fp16.to_fp16(models[stage], plan.fp16_nodes[stage]),
                         fp32_islands=[s.name for s in plan.stats if s.stage == stage and s.fp32_reason],
                         predicted_error=predicted["worst"])
        report["fp16"] = {"plan": plan.summary(), "predicted_error": predicted}
    if int8_graphs:
        models = activation_form_models(bundle, G)
        quantized = int8.calibrate(models, jobs)
        measured = int8.measure(models, quantized, error_jobs)
        for stage, model in quantized.items():
            _write_graph(bundle, manifest, stage, "int8", model, modulation="activation",
                         qdq=int8.qdq_summary(model), measured_error=measured["worst"])
        report["int8"] = {"qdq": {s: int8.qdq_summary(m) for s, m in quantized.items()}, "measured_error": measured}
    manifest.setdefault("verification", {})
    manifest["verification"] = {**manifest["verification"], "precision": report}
    write_manifest(bundle.path, manifest)
    return report
