"""`export_bundle`: a Generator -> a bundle folder (graphs + manifest.json), checked against PyTorch.

The bundle is built in a hidden temporary sibling folder and renamed into place only
when every graph is written, checked and (unless `verify=False`) matches PyTorch, so an
interrupted or failed export never leaves a folder that looks like a bundle.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import onnx
import onnxscript
import torch
from tqdm import tqdm

import creps
from creps.errors import ExportError
from creps.export.graphs import CLEANUP, MIN_OPSET, export_stage, io_signature
from creps.export.verify import verify_bundle
from creps.files import atomic_path
from creps.model import Generator
from creps.runtime.bundle import file_entry, sha256_file, write_manifest
from creps.runtime.stages import RUN_STAGES, graph_key

log = logging.getLogger(__name__)

PRECISION = "fp32"
# Modulated-layer form per graph, by ONNX Runtime CPU timing at the published 256 config as
# creps-run calls the graphs (benchmarks/export.py: one thread, default chunk and tile, batch
# 1; quiet machine, 2026-11-25): folding s and d into a per-sample weight is 5% faster for a
# pixel tile (0.032 vs 0.034 s); for a line chunk the activation form is 3% faster (0.465 vs
# 0.480 s). Lines stay folded because the FP16 islands and predicted errors in
# benchmarks/results/precision.json were computed on these graphs: switching the lines form
# means re-running benchmarks/precision.py.
MODULATION = {"mapping": None, "lines": "folded", "pixels": "folded", "generator": "folded"}


def model_section(G: Generator, truncation_cutoff: int | None) -> dict:
    cfg = G.cfg
    return {
        "z_dim": cfg.z_dim, "w_dim": cfg.w_dim, "num_ws": cfg.num_ws, "num_blocks": cfg.num_blocks,
        "blocks": cfg.entangled_resolutions, "rank": cfg.rank, "biline_channels": cfg.biline_channels,
        "img_resolution": cfg.img_resolution, "img_channels": cfg.img_channels,
        "mapping_layers": cfg.mapping_layers, "channel_base": cfg.channel_base, "channel_max": cfg.channel_max,
        "truncation_cutoff": truncation_cutoff,
    }


def exporter_section() -> dict:
    return {"name": "creps", "version": creps.__version__, "torch": torch.__version__,
            "onnx": onnx.__version__, "onnxscript": onnxscript.__version__}


def source_section(source) -> dict:
    if source is None:
        return {"file": None, "sha256": None}
    return {"file": Path(source).name, "sha256": sha256_file(source)}


def check_writable(out: Path) -> None:
    """Fail now, not after minutes of export, when `out` cannot be created. Creates nothing:
    the atomic write makes the missing folders, and removes them again if it fails."""
    existing = next(p for p in out.parents if p.exists())  # "." or "/" at the latest
    if not existing.is_dir():
        raise ExportError(f"cannot write the bundle {out}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryDirectory(prefix=f".{out.name}.", suffix=".probe", dir=existing):
            pass
    except OSError as exc:
        raise ExportError(f"cannot write the bundle {out}: {exc.strerror or exc}") from None


def export_bundle(G: Generator, out_dir, *, source=None, opset: int = 18, fused: bool = False,
                  verify: bool = True, force: bool = False, progress: bool = False) -> Path:
    """Export G's stages (and with `fused` the whole generator) into the bundle folder `out_dir`.

    `source` is the checkpoint G came from (its sha256 goes into the manifest). An
    existing `out_dir` is refused unless `force`. Raises ExportError.
    """
    out = Path(out_dir)
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old: the graphs need opset {MIN_OPSET} or newer")
    if out.exists() and not (force and out.is_dir()):
        what = "exists" if out.is_dir() else "exists and is not a folder"
        raise ExportError(f"{out} {what}; choose another --out" + (" or pass --force" if out.is_dir() else ""))
    check_writable(out)
    truncation_cutoff = None  # the model truncates all ws (the original's default)
    stages = RUN_STAGES + (("generator",) if fused else ())
    manifest = {"exporter": exporter_section(), "source": source_section(source),
                "model": model_section(G, truncation_cutoff), "graphs": {}}
    with atomic_path(out, directory=True) as tmp:
        os.chmod(tmp, 0o755)
        for stage in tqdm(stages, desc="export", unit="graph", disable=not progress):
            file = f"{stage}.onnx"
            try:
                model = export_stage(G, stage, tmp / file, opset, truncation_cutoff,
                                     modulation=MODULATION[stage] or "activation")
            except (RuntimeError, ValueError, onnx.checker.ValidationError) as exc:  # incl. OnnxExporterError
                raise ExportError(f"cannot export the {stage} stage of this model: {exc}".splitlines()[0]) from exc
            manifest["graphs"][graph_key(stage, PRECISION)] = file_entry(
                tmp, file, PRECISION, stage=stage, opset=opset, **io_signature(model),
                modulation=MODULATION[stage], cleanup=CLEANUP)
            log.info("exported %s", file)
        write_manifest(tmp, manifest)
        if verify:
            manifest["verification"] = verify_bundle(G, tmp, truncation_cutoff, progress=progress)
            write_manifest(tmp, manifest)
    log.info("bundle written to %s", out)
    return out
