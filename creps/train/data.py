"""Training images: a folder (searched recursively) or a zip, prepared once into a uint8 cache.

Every image is centre-cropped to a square and resized to the training resolution up
front; the result is one [N, 3, R, R] uint8 array stored under the cache directory with a
name that hashes the source (paths, sizes, modification times) and the resolution, so a
second run with the same data starts at once. Unreadable images are skipped and counted.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from creps.errors import CrepsError
from creps.files import atomic_path

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}


class DatasetError(CrepsError):
    """The training data is missing, empty or unreadable."""


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "creps" / "datasets"


def _is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS and not Path(name).name.startswith(".")


def list_sources(path: Path) -> list[tuple[str, int, int]]:
    """(name, size, mtime_ns) of every image file in a folder (recursive) or a zip, sorted."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _is_image_name(p.name))
        return [(str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            infos = sorted((i for i in zf.infolist() if not i.is_dir() and _is_image_name(i.filename)),
                           key=lambda i: i.filename)
            return [(i.filename, i.file_size, i.CRC) for i in infos]
    if not path.exists():
        raise DatasetError(f"{path}: no such data folder or zip")
    raise DatasetError(f"{path}: not a folder of images or a zip of images")


def centre_crop_resize(img: Image.Image, resolution: int) -> np.ndarray:
    """Largest centred square, resized with Lanczos -> (3, R, R) uint8."""
    img = img.convert("RGB")
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.LANCZOS)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def _read_all(path: Path, names: list[str], resolution: int) -> tuple[np.ndarray, int]:
    """Decode and prepare every image; returns (images, number skipped)."""
    images, skipped = [], 0
    zf = zipfile.ZipFile(path) if path.is_file() else None
    try:
        for name in tqdm(names, desc="preparing images", unit="img", leave=False):
            try:
                if zf is not None:
                    img = Image.open(io.BytesIO(zf.read(name)))
                else:
                    img = Image.open(path / name)
                img.load()
                images.append(centre_crop_resize(img, resolution))
            except (UnidentifiedImageError, OSError, ValueError, zipfile.BadZipFile) as exc:
                skipped += 1
                log.warning("skipping unreadable image %s (%s)", name, exc)
    finally:
        if zf is not None:
            zf.close()
    stacked = np.stack(images) if images else np.zeros((0, 3, resolution, resolution), np.uint8)
    return stacked, skipped


def cache_key(path: Path, sources: list[tuple[str, int, int]], resolution: int) -> str:
    h = hashlib.sha256(f"{path.resolve()}\n{resolution}\n".encode())
    for name, size, stamp in sources:
        h.update(f"{name}\t{size}\t{stamp}\n".encode())
    return h.hexdigest()[:24]


def prepare_dataset(data: str | Path, resolution: int, cache_dir: Path | None = None) -> Path:
    """Build (or find) the cache for `data` at `resolution`; returns the .npy path."""
    path = Path(data)
    sources = list_sources(path)
    if not sources:
        raise DatasetError(f"{path}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    cache_dir = cache_dir or default_cache_dir()
    cached = cache_dir / f"{path.name}-{resolution}-{cache_key(path, sources, resolution)}.npy"
    if cached.is_file():
        log.info("using cached images %s", cached)
        return cached
    images, skipped = _read_all(path, [name for name, _, _ in sources], resolution)
    if skipped:
        log.warning("%s: skipped %d unreadable image(s) of %d", path, skipped, len(sources))
    if len(images) == 0:
        raise DatasetError(f"{path}: none of the {len(sources)} image files could be read")
    with atomic_path(cached) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, images)
    log.info("prepared %d images at %dx%d into %s", len(images), resolution, resolution, cached)
    return cached


def load_images(cached: Path) -> np.ndarray:
    """The prepared images, (N, 3, R, R) uint8, memory-mapped."""
    return np.load(cached, mmap_mode="r")
