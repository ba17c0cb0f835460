"""Parity at export time: a written bundle, run with ONNX Runtime (CPU), against the PyTorch model.

The ONNX side chains its own outputs as a runtime does (mapping -> lines -> pixels); each
intermediate is compared with the model's staged API (`G.mapping` with truncation,
`G.synthesis.lines`, `G.synthesis.pixels`), and the fused graph, if present, with the
model's whole synthesis.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from tqdm import tqdm

from creps import grid
from creps.errors import ExportError
from creps.model import Generator
from creps.runtime.bundle import read_bundle

log = logging.getLogger(__name__)

TOLERANCE = 1e-4
PSI = 0.7
BATCHES = (1, 2)
# (label, width, height, window): square, wide, tall, odd, 1xN, and a zoomed window. Small, since
# the line stage costs (H + W) x 10 M multiply-adds per image at the published config.
SIZES = (
    ("square", 48, 48, None),
    ("wide", 64, 24, None),
    ("tall", 24, 64, None),
    ("odd", 33, 21, None),
    ("1xN", 1, 41, None),
    ("window", 32, 32, grid.Window(0.25, 0.1, 0.75, 0.6)),
)


def cpu_session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@torch.no_grad()
def reference(G: Generator, z: np.ndarray, ys: np.ndarray, xs: np.ndarray, truncation_cutoff) -> dict:
    """The PyTorch model's stage outputs, as numpy."""
    ws = G.mapping(torch.from_numpy(z), truncation_psi=PSI, truncation_cutoff=truncation_cutoff)
    cols, rows = G.synthesis.lines(ws, torch.from_numpy(ys), torch.from_numpy(xs))
    img = G.synthesis.pixels(ws, cols, rows)
    return {"ws": ws.numpy(), "cols": cols.numpy(), "rows": rows.numpy(), "img": img.numpy()}


def run_stages(sessions: dict, z: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> dict:
    """The bundle's graphs chained as a runtime chains them."""
    psi = np.array([PSI], dtype=np.float32)
    (ws,) = sessions["mapping"].run(None, {"z": z, "psi": psi})
    cols, rows = sessions["lines"].run(None, {"ws": ws, "ys": ys, "xs": xs})
    (img,) = sessions["pixels"].run(None, {"ws": ws, "cols": cols, "rows": rows})
    out = {"ws": ws, "cols": cols, "rows": rows, "img": img}
    if "generator" in sessions:
        (out["generator"],) = sessions["generator"].run(None, {"z": z, "psi": psi, "ys": ys, "xs": xs})
    return out


def compare(ours: dict, ref: dict) -> tuple[dict[str, float], dict[str, float]]:
    """Max abs error and max abs reference value per output."""
    refs = {name: ref["img" if name == "generator" else name] for name in ours}
    errors = {name: float(np.abs(value - refs[name]).max()) for name, value in ours.items()}
    magnitudes = {name: float(np.abs(refs[name]).max()) for name in ours}
    return errors, magnitudes


def check_finite(side: str, outputs: dict, case: str) -> None:
    """Refuse NaN or Inf in any output: they compare as no error (Inf - Inf) or as no number at all."""
    for name, value in outputs.items():
        if not np.isfinite(value).all():
            raise ExportError(
                f"parity check failed: {side} gives non-finite values (NaN or Inf) in {name} at {case} "
                "(are the checkpoint's weights finite?); no bundle written"
            )


def verify_bundle(G: Generator, folder: Path, truncation_cutoff: int | None = None,
                  tolerance: float = TOLERANCE, progress: bool = False) -> dict:
    """Run every fp32 graph at each of SIZES and BATCHES; returns the manifest's verification record.

    The tolerance is absolute for outputs within [-1, 1] (a trained model's image) and
    relative to the largest magnitude beyond (intermediates, untrained weights).
    Raises ExportError naming the case and output when an error exceeds it or a value is not finite.
    """
    bundle = read_bundle(folder)
    sessions = {entry["stage"]: cpu_session(bundle.file(entry))
                for entry in bundle.graphs.values() if entry["precision"] == "fp32"}
    rng = np.random.RandomState(0)
    records = []
    cases = [(size, batch) for size in SIZES for batch in BATCHES]
    for (label, width, height, window), batch in tqdm(cases, desc="verify", unit="case", disable=not progress):
        ys, xs = grid.coords(width, height, window)
        z = rng.randn(batch, G.cfg.z_dim).astype(np.float32)  # (N, z_dim)
        case = f"{label} {width}x{height} batch {batch}"
        ours, ref = run_stages(sessions, z, ys, xs), reference(G, z, ys, xs, truncation_cutoff)
        check_finite("PyTorch", ref, case)  # first: a model that is not finite is the cause, not the export
        check_finite("ONNX Runtime", ours, case)
        errors, magnitudes = compare(ours, ref)
        records.append({"case": label, "width": width, "height": height, "batch": batch,
                        "window": list(window) if window else None, "max_abs_error": errors,
                        "max_abs_value": magnitudes})
        log.info("%s: max abs error %s", case, errors)
        for name, error in errors.items():
            if not error <= tolerance * max(1.0, magnitudes[name]):  # written so that a NaN fails too
                raise ExportError(
                    f"parity check failed: {name} differs from PyTorch by {error:.3g} (values up to "
                    f"{magnitudes[name]:.3g}) at {case} (tolerance {tolerance:g}); no bundle written"
                )
    return {"runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider", "psi": PSI,
            "tolerance": tolerance, "max_abs_error": max(max(r["max_abs_error"].values()) for r in records),
            "cases": records}
