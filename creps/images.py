"""Writing images: PNG through Pillow, always atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from creps.files import atomic_path


def save_image(pixels: np.ndarray, path: str | Path) -> None:
    """Write an [H, W, 3] uint8 array; the format follows the file's extension."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image extension {path.suffix!r} (use .png)")
    with atomic_path(path) as tmp:
        Image.fromarray(pixels, "RGB").save(tmp, format=fmt)


def seed_filename(seed: int) -> str:
    return f"seed{seed:04d}.png"
