"""Fréchet Inception Distance, with Inception weights the user supplies (nothing is downloaded).

The feature extractor is a TorchScript file (`torch.jit.save`), called on uint8 images
[N, 3, H, W] as the original's metric code calls its Inception (with
`return_features=True` when the module accepts it), returning [N, F] features. The
original's `inception-2015-12-05.pkl` is a pickled TorchScript module; re-save it once with
`torch.jit.save(pickle.load(f), "inception.pt")` on a machine where you trust that file.

FID = |mu_r - mu_g|^2 + tr(S_r) + tr(S_g) - 2 tr((S_r S_g)^(1/2)). The trace of the square
root is computed without `sqrtm`: S_r S_g is similar to A = S_r^(1/2) S_g S_r^(1/2), which
is symmetric positive semi-definite, so tr((S_r S_g)^(1/2)) = sum(sqrt(eig(A))).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch
from tqdm import tqdm

from creps.errors import CrepsError

log = logging.getLogger(__name__)

FID_SEED = 123
CHUNK = 32


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, F) features -> mean (F,), covariance (F, F), in float64."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    eigvals, eigvecs = np.linalg.eigh(cov1)
    root1 = (eigvecs * np.sqrt(np.clip(eigvals, 0, None))) @ eigvecs.T  # S1^(1/2), symmetric
    inner = root1 @ cov2 @ root1
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * trace_root)


def load_detector(path: str, device: torch.device) -> torch.jit.ScriptModule:
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated, but it is how Inception ships
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location=device).eval()
    except (RuntimeError, ValueError, OSError) as exc:
        raise CrepsError(f"--inception {path}: not a TorchScript feature extractor ({exc})") from exc


def detect(detector, images_uint8: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) uint8 -> (N, F) float64 features."""
    with torch.no_grad():
        try:
            feats = detector(images_uint8, return_features=True)
        except RuntimeError:
            feats = detector(images_uint8)
    return feats.reshape(len(images_uint8), -1).double().cpu().numpy()


def to_uint8_tensor(img: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> uint8, as images are written (clamp(x*127.5+128), truncated)."""
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)


class FidMetric:
    """FID of a generator against the training images (real statistics computed once)."""

    def __init__(self, inception: str, images: np.ndarray, num_images: int, device: torch.device):
        self.detector = load_detector(inception, device)
        self.device = device
        self.num_images = num_images
        count = min(num_images, len(images))
        feats = [detect(self.detector, torch.from_numpy(np.ascontiguousarray(images[i:i + CHUNK])).to(device))
                 for i in tqdm(range(0, count, CHUNK), desc="FID: real features", leave=False)]
        self.real = feature_statistics(np.concatenate(feats))

    def __call__(self, G) -> float:
        gen = torch.Generator().manual_seed(FID_SEED)
        feats = []
        for start in tqdm(range(0, self.num_images, CHUNK), desc="FID: generated features", leave=False):
            n = min(CHUNK, self.num_images - start)
            z = torch.randn(n, G.z_dim, generator=gen).to(self.device)
            with torch.no_grad():
                feats.append(detect(self.detector, to_uint8_tensor(G(z))))
        fid = frechet_distance(*self.real, *feature_statistics(np.concatenate(feats)))
        log.info("FID (%d images) %.3f", self.num_images, fid)
        return fid
