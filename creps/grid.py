"""Image sizes, pixel coordinates, seeds and pixel conversion (numpy only).

Shared by the PyTorch model and the torch-free runtime, so both see the same
coordinates for the same request. Sizes are (width, height); `ys` drives the column
encoding (one value per image row), `xs` the row encoding (one per image column).
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np

# Past this many pixels a request is refused (a 65536 x 65536 image, 16 GiB as uint8).
MAX_PIXELS = 1 << 32
MAX_SIDE = 1 << 20
FITS = ("extend", "stretch")


class Window(NamedTuple):
    """The part of the plane an image shows: x0, x1 horizontal, y0, y1 vertical."""

    x0: float
    y0: float
    x1: float
    y1: float


def parse_size(text: str) -> tuple[int, int]:
    """'2048x512' -> (2048, 512); a lone '512' means square. Raises ValueError."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not match:
        raise ValueError(f"size {text!r} is not WxH (e.g. 2048x512)")
    width = int(match.group(1))
    height = int(match.group(2) or width)
    check_size(width, height)
    return width, height


def check_size(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise ValueError(f"size {width}x{height}: both sides must be at least 1 pixel")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise ValueError(
            f"size {width}x{height} is past the limit ({MAX_SIDE} per side, {MAX_PIXELS} pixels)"
        )


def parse_window(text: str) -> Window:
    """'x0,y0,x1,y1' -> Window. Raises ValueError."""
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(np.isfinite(values)):
        raise ValueError(f"window {text!r} is not four numbers x0,y0,x1,y1")
    return Window(*values)


def default_window(width: int, height: int, fit: str = "extend") -> Window:
    """The window a size shows when none is given.

    `stretch` maps both sides to [0, 1]. `extend` gives the shorter side [0, 1] and the
    longer one the same pixel spacing, centred on 0.5, so the trained view sits in the
    middle of a panorama. With a 1-pixel short side there is no spacing to keep and
    `extend` falls back to `stretch`.
    """
    if fit not in FITS:
        raise ValueError(f"fit {fit!r} is not one of {', '.join(FITS)}")
    short = min(width, height)
    if fit == "stretch" or short < 2:
        return Window(0.0, 0.0, 1.0, 1.0)
    step = 1.0 / (short - 1)
    half_w = (width - 1) * step / 2
    half_h = (height - 1) * step / 2
    return Window(0.5 - half_w, 0.5 - half_h, 0.5 + half_w, 0.5 + half_h)


def coords(width: int, height: int, window: Window | None = None, fit: str = "extend"):
    """Coordinate vectors (ys [H], xs [W]) float32, computed once in float64."""
    check_size(width, height)
    win = default_window(width, height, fit) if window is None else Window(*window)
    ys = np.linspace(win.y0, win.y1, height, dtype=np.float64).astype(np.float32)
    xs = np.linspace(win.x0, win.x1, width, dtype=np.float64).astype(np.float32)
    return ys, xs


def parse_seeds(text: str) -> list[int]:
    """'0,2,5-7' -> [0, 2, 5, 6, 7]. Raises ValueError."""
    seeds: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise ValueError(f"seeds {text!r}: {part!r} is not a number or a range a-b")
        lo = int(match.group(1))
        hi = int(match.group(2) or lo)
        if hi < lo:
            raise ValueError(f"seeds {text!r}: range {part.strip()} runs backwards")
        if hi >= 2**32:
            raise ValueError(f"seeds {text!r}: a seed must be below 2**32")
        seeds.extend(range(lo, hi + 1))
    return seeds


def seed_to_z(seed: int, z_dim: int) -> np.ndarray:
    """The original's latent for a seed: RandomState(seed).randn(1, z_dim), as float32."""
    return np.random.RandomState(seed).randn(1, z_dim).astype(np.float32)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """[..., 3, H, W] float in about [-1, 1] -> [..., H, W, 3] uint8, as the original.

    clamp(img * 127.5 + 128, 0, 255), truncated, computed in float32.
    """
    img = np.asarray(img, dtype=np.float32)
    pixels = np.clip(img * np.float32(127.5) + np.float32(128), 0, 255).astype(np.uint8)
    return np.moveaxis(pixels, -3, -1)
