"""Sample jobs (seed, psi, size) run through the staged graphs with ONNX Runtime on the CPU.

The calibration tools compare a changed graph (FP16-rounded, Q/DQ) with the FP32 one on
the same jobs. `probe` runs a job on a few evenly spaced rows and columns only: the line
stage is pointwise along a line and the pixel stage pointwise per pixel, so a probe sees
exactly the values the full image has at those rows and columns (coordinate extremes
included), at a fraction of the cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx

from creps import grid
from creps.calib import emulate
from creps.errors import NonFiniteError

PSNR_PEAK = 2.0  # the image range [-1, 1], peak to peak
PIXEL_BAND = 64  # rows per pixel-stage call: keeps memory flat at large sizes


@dataclass(frozen=True)
class Job:
    seed: int
    psi: float
    width: int
    height: int

    @property
    def label(self) -> str:
        return f"seed {self.seed}, psi {self.psi:g}, {self.width}x{self.height}"

    def z(self, z_dim: int) -> np.ndarray:
        return grid.seed_to_z(self.seed, z_dim)  # (1, z_dim)

    def coords(self, probe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ys, xs) of the job, or of `probe` evenly spaced rows/columns (ends included)."""
        ys, xs = grid.coords(self.width, self.height)
        if probe is None:
            return ys, xs
        return ys[probe_indices(len(ys), probe)], xs[probe_indices(len(xs), probe)]

    def to_dict(self) -> dict:
        return {"seed": self.seed, "psi": self.psi, "size": f"{self.width}x{self.height}"}


DEFAULT_JOBS = (Job(0, 1.0, 512, 512), Job(1, 0.7, 2048, 512))


def probe_indices(n: int, k: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(np.int64))


def z_dim(mapping: onnx.ModelProto) -> int:
    return mapping.graph.input[0].type.tensor_type.shape.dim[1].dim_value


class StageRunner:
    """Runs mapping -> lines -> pixels for one job with given graphs (sessions made once)."""

    def __init__(self, models: dict[str, onnx.ModelProto]):
        self.z_dim = z_dim(models["mapping"])
        self.sessions = {stage: emulate.session(models[stage]) for stage in ("mapping", "lines", "pixels")}

    def ws(self, job: Job) -> np.ndarray:
        psi = np.array([job.psi], np.float32)
        return self.sessions["mapping"].run(None, {"z": job.z(self.z_dim), "psi": psi})[0]  # (1, num_ws, w_dim)

    def lines(self, ws: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cols, rows = self.sessions["lines"].run(["cols", "rows"], {"ws": ws, "ys": ys, "xs": xs})
        return cols, rows  # (1, B, 32, H, R), (1, B, 32, W, R)

    def pixels(self, ws: np.ndarray, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
        bands = [self.sessions["pixels"].run(["img"], {"ws": ws, "cols": cols[:, :, :, y:y + PIXEL_BAND],
                                                       "rows": rows})[0]
                 for y in range(0, cols.shape[3], PIXEL_BAND)]
        return np.concatenate(bands, axis=2)  # (1, 3, H, W)

    def image(self, job: Job, probe: int | None = None) -> np.ndarray:
        ws = self.ws(job)
        ys, xs = job.coords(probe)
        return self.pixels(ws, *self.lines(ws, ys, xs))


def check_reference(reference: np.ndarray, where: str = "the sample jobs") -> None:
    """Refuse FP32 images with NaN or Inf: the FP32 graphs themselves are broken."""
    if not np.isfinite(reference).all():
        raise NonFiniteError(f"the FP32 graphs give NaN or Inf values ({where}), so no FP16 or INT8 graph can be "
                             "measured against them: re-export the bundle from a checkpoint with finite weights")


def compare(reference: np.ndarray, test: np.ndarray) -> dict:
    """Error of `test` against `reference` images: max abs and PSNR (peak 2.0) of the float
    images; PSNR (peak 255) and max abs (levels) of their uint8 images, as written to PNG;
    uint8 pixels changed; and the fraction of `test` values that are NaN or Inf (counted as
    0 in the other figures). A non-finite reference is an error: the FP32 graphs themselves
    are broken."""
    check_reference(reference)
    non_finite = float(np.mean(~np.isfinite(test)))
    test = np.nan_to_num(test, nan=0.0, posinf=0.0, neginf=0.0)
    diff = test.astype(np.float64) - reference.astype(np.float64)
    test_u8, reference_u8 = grid.to_uint8(test), grid.to_uint8(reference)
    changed = np.any(test_u8 != reference_u8, axis=-1)
    levels = test_u8.astype(np.float64) - reference_u8
    return {"max_abs": float(np.max(np.abs(diff))), "psnr_db": _psnr(PSNR_PEAK, float(np.mean(diff**2))),
            "uint8_psnr_db": _psnr(255.0, float(np.mean(levels**2))), "uint8_max_abs": int(np.max(np.abs(levels))),
            "uint8_pixels_changed": float(np.mean(changed)), "non_finite": non_finite}


def _psnr(peak: float, mse: float) -> float | None:
    """10 log10(peak^2 / MSE), rounded to 0.01 dB; None for identical images."""
    return None if mse == 0 else round(10 * math.log10(peak**2 / mse), 2)


def worst(errors: list[dict]) -> dict:
    """The worst of several `compare` results (largest max abs, lowest PSNR, most non-finite values)."""
    def lowest(key):
        values = [e[key] for e in errors if e[key] is not None]
        return min(values) if values else None

    return {"max_abs": max(e["max_abs"] for e in errors), "psnr_db": lowest("psnr_db"),
            "uint8_psnr_db": lowest("uint8_psnr_db"), "uint8_max_abs": max(e["uint8_max_abs"] for e in errors),
            "uint8_pixels_changed": max(e["uint8_pixels_changed"] for e in errors),
            "non_finite": max(e["non_finite"] for e in errors)}
