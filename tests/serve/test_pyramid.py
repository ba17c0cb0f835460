"""The canvas geometry against the maths (exact rationals), and its DZI descriptor."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from fractions import Fraction

import numpy as np
import pytest

from creps import grid
from creps.serve.pyramid import Canvas, CanvasError, window_header

# (R, views, detail): the default and published models, the tiny bundle, odd views, odd R, a coarse detail
CANVASES = [(64, 16, 4.0), (256, 16, 4.0), (32, 16, 4.0), (32, 3, 4.0), (33, 5, 1.0), (64, 7, 2.5), (2, 1, 1.0)]


def canvas_of(params) -> Canvas:
    return Canvas(*params)


def reference_step(R: int, detail: float) -> Fraction:
    """The largest power of two at most 1 / (detail * (R - 1)), by search over exact rationals."""
    bound = 1 / (Fraction(detail) * (R - 1))
    step = Fraction(1)
    while step > bound:
        step /= 2
    return step


def centre(canvas: Canvas, level: int, i: int) -> Fraction:
    """The mean of the centres of the deepest-level pixels that level pixel i covers."""
    shrink = 2 ** (canvas.max_level - level)
    x0, step = Fraction(1, 2) - Fraction(canvas.views, 2), Fraction(canvas.step)
    covered = [x0 + step * j for j in range(i * shrink, (i + 1) * shrink)]
    return sum(covered) / len(covered)


@pytest.mark.parametrize("params", CANVASES)
def test_deepest_level_is_views_at_a_power_of_two_step(params):
    R, views, detail = params
    canvas = canvas_of(params)
    assert Fraction(canvas.step) == reference_step(R, detail)
    assert canvas.width == canvas.height == Fraction(views) / Fraction(canvas.step)
    assert canvas.x0 == canvas.y0 == 0.5 - views / 2
    # centred on the trained view: the mean of the first and last deepest centres is 0.5 - step/2
    last = canvas.x0 + canvas.step * (canvas.width - 1)
    assert (canvas.x0 + last) / 2 == 0.5 - canvas.step / 2


def test_the_documented_canvases():
    assert (Canvas(64).step, Canvas(64).width, Canvas(64).levels) == (1 / 256, 4096, 13)
    assert (Canvas(256).step, Canvas(256).width, Canvas(256).levels) == (1 / 1024, 16384, 15)
    assert Canvas(64).x0 == -7.5


@pytest.mark.parametrize("params", CANVASES)
def test_levels_halve_rounding_up_down_to_one_pixel(params):
    canvas = canvas_of(params)
    assert 2 ** (canvas.max_level - 1) < max(canvas.width, canvas.height) <= 2 ** canvas.max_level or canvas.width == 1
    size = (canvas.width, canvas.height)
    for level in range(canvas.max_level, -1, -1):  # each level is the one above halved, rounded up (DZI)
        assert canvas.level_size(level) == size
        size = tuple(math.ceil(s / 2) for s in size)
    assert canvas.level_size(0) == (1, 1)


@pytest.mark.parametrize("params", CANVASES)
def test_tiles_cover_each_level_with_a_one_pixel_overlap(params):
    canvas = canvas_of(params)
    for level in range(canvas.levels):
        width, height = canvas.level_size(level)
        cols, rows = canvas.tile_counts(level)
        assert (cols, rows) == (math.ceil(width / 256), math.ceil(height / 256))
        for col in range(cols):
            span, _ = canvas.tile_pixels(level, col, 0)
            assert span.start == max(0, 256 * col - 1) and span.stop == min(width, 256 * (col + 1) + 1)
        assert not canvas.has_tile(level, cols, 0) and not canvas.has_tile(level, 0, rows)
        assert not canvas.has_tile(level, -1, 0) and not canvas.has_tile(level, 0, -1)
    assert not canvas.has_tile(-1, 0, 0) and not canvas.has_tile(canvas.levels, 0, 0)


@pytest.mark.parametrize("params", CANVASES)
def test_tile_windows_are_the_pixel_centres_exactly(params):
    """Every level, its first, second and last tiles: the window's corners are the exact centres
    of the deepest pixels each covers, float32-exact, and linspace of the window gives every
    pixel's exact centre (so adjacent tiles continue one grid)."""
    canvas = canvas_of(params)
    for level in range(canvas.levels):
        cols, rows = canvas.tile_counts(level)
        for col, row in {(0, 0), (min(1, cols - 1), rows - 1), (cols - 1, min(1, rows - 1)), (cols - 1, rows - 1)}:
            window, (w, h) = canvas.window(level, col, row)
            columns, lines = canvas.tile_pixels(level, col, row)
            assert (w, h) == (len(columns), len(lines))
            assert Fraction(window.x0) == centre(canvas, level, columns[0])
            assert Fraction(window.x1) == centre(canvas, level, columns[-1])
            assert Fraction(window.y0) == centre(canvas, level, lines[0])
            assert Fraction(window.y1) == centre(canvas, level, lines[-1])
            assert all(float(np.float32(v)) == v for v in window)
            ys, xs = grid.coords(w, h, window=window)
            assert [Fraction(float(x)) for x in xs] == [centre(canvas, level, i) for i in columns]
            assert [Fraction(float(y)) for y in ys] == [centre(canvas, level, i) for i in lines]


def test_adjacent_tiles_share_their_overlap_coordinates():
    canvas = Canvas(64, 3)  # 768 px: tiles 257, 258 and 257 px wide
    level = canvas.max_level
    coords = []
    for col in range(canvas.tile_counts(level)[0]):
        window, size = canvas.window(level, col, 0)
        coords.append(grid.coords(*size, window=window)[1])  # xs
    for left, right in zip(coords, coords[1:]):
        np.testing.assert_array_equal(left[-2:], right[:2])  # the two pixels each side of a tile boundary


def test_descriptor_is_deep_zoom_xml():
    canvas = Canvas(64, 5)
    root = ET.fromstring(canvas.descriptor())
    ns = "{http://schemas.microsoft.com/deepzoom/2008}"
    assert root.tag == f"{ns}Image"
    assert (root.get("TileSize"), root.get("Overlap"), root.get("Format")) == ("256", "1", "png")
    size = root.find(f"{ns}Size")
    assert (int(size.get("Width")), int(size.get("Height"))) == (canvas.width, canvas.height) == (1280, 1280)


def test_window_header_reads_back_as_the_same_floats():
    for level in (0, 5, 12):
        window, _ = Canvas(64).window(level, 0, 0)
        text = window_header(window)
        assert grid.parse_window(text) == window
        assert len(text.split(",")) == 4


@pytest.mark.parametrize("params,match", [((64, 0), "views"), ((64, 2000), "views"), ((64, 2.5), "views"),
                                          ((64, 16, 0.5), "detail"), ((64, 16, float("nan")), "detail"),
                                          ((1,), "pixel"), ((256, 1024, 64.0), "past the limit")])
def test_bad_canvases_are_refused(params, match):
    with pytest.raises(CanvasError, match=match):
        Canvas(*params)
