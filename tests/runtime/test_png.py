"""The streaming PNG writer: what Pillow reads back is exactly what was written, band by band."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from creps.runtime.png import PngStream


def stream(pixels: np.ndarray, band: int, level: int = 6) -> bytes:
    height, width, _ = pixels.shape
    buffer = io.BytesIO()
    png = PngStream(buffer, width, height, level)
    for start in range(0, height, band):
        png.write(pixels[start:start + band])
    png.close()
    return buffer.getvalue()


def smooth(width, height) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x ^ y) & 255], -1).astype(np.uint8)


@pytest.mark.parametrize("width,height,band", [(1, 1, 1), (7, 5, 2), (300, 17, 4), (1, 40, 40), (513, 3, 1)])
@pytest.mark.parametrize("kind", ["random", "smooth"])
def test_round_trip_through_pillow(width, height, band, kind):
    rng = np.random.default_rng(width * 1000 + height)
    pixels = rng.integers(0, 256, (height, width, 3), np.uint8) if kind == "random" else smooth(width, height)
    image = Image.open(io.BytesIO(stream(pixels, band)))
    assert image.mode == "RGB" and image.size == (width, height)
    np.testing.assert_array_equal(np.asarray(image), pixels)


def test_large_image_spans_several_idat_chunks():
    pixels = np.random.default_rng(0).integers(0, 256, (700, 800, 3), np.uint8)  # 1.7 MB, incompressible
    data = stream(pixels, 64, level=1)
    assert data.count(b"IDAT") >= 2
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)


def test_smooth_image_compresses():
    pixels = smooth(512, 256)
    assert len(stream(pixels, 32)) < pixels.nbytes / 10


def test_wrong_rows_and_missing_rows_are_refused():
    png = PngStream(io.BytesIO(), 4, 3)
    with pytest.raises(ValueError, match="uint8"):
        png.write(np.zeros((1, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        png.write(np.zeros((1, 4, 3), np.float32))
    png.write(np.zeros((2, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="more than 3 rows"):
        png.write(np.zeros((2, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="2 of 3 rows"):
        png.close()
