"""Tiling is exact: the line stage is pointwise along a line, the pixel stage per pixel."""

import pytest
import torch

from creps import grid
from tiny_models import TINY, random_generator

BAR = 1e-5


@pytest.fixture(scope="module")
def G():
    return random_generator(TINY, seed=5)


@pytest.fixture(scope="module")
def ws(G):
    z = torch.randn(2, TINY.z_dim, generator=torch.Generator().manual_seed(1))
    return G.mapping(z, truncation_psi=0.7)


def lines_and_image(G, ws, width, height):
    ys, xs = (torch.from_numpy(v) for v in grid.coords(width, height))
    cols, rows = G.synthesis.lines(ws, ys, xs)
    return ys, xs, cols, rows, G.synthesis.pixels(ws, cols, rows)


@pytest.mark.parametrize("width,height", [(37, 23), (13, 41), (29, 1), (1, 31)])
def test_pixels_on_tiles_equal_slices_of_whole(G, ws, width, height):
    _, _, cols, rows, whole = lines_and_image(G, ws, width, height)
    diff = 0.0
    for y0, y1 in [(0, height), (0, (height + 1) // 2), ((height + 1) // 2, height), (height // 3, height // 3 + 1)]:
        for x0, x1 in [(0, width), (0, 7), (width // 2, width), (width - 1, width)]:
            x1 = min(x1, width)
            if y1 <= y0 or x1 <= x0:
                continue
            tile = G.synthesis.pixels(ws, cols[:, :, :, y0:y1], rows[:, :, :, x0:x1])
            assert tile.shape == (2, 3, y1 - y0, x1 - x0)
            diff = max(diff, (tile - whole[:, :, y0:y1, x0:x1]).abs().max().item())
    assert diff <= BAR, f"{width}x{height}: tiles differ by {diff:.3g}"


@pytest.mark.parametrize("width,height,chunk", [(37, 23, 5), (13, 41, 8), (50, 3, 7)])
def test_lines_on_chunks_equal_chunks_of_whole(G, ws, width, height, chunk):
    ys, xs, cols, rows, _ = lines_and_image(G, ws, width, height)
    diff = 0.0
    # chunks of ys with all of xs, and all of ys with chunks of xs, and both chunked together
    for start in range(0, max(height, width), chunk):
        c, r = G.synthesis.lines(ws, ys[start:start + chunk], xs[start:start + chunk])
        assert c.shape[3] == len(ys[start:start + chunk]) and r.shape[3] == len(xs[start:start + chunk])
        if c.shape[3]:
            diff = max(diff, (c - cols[:, :, :, start:start + chunk]).abs().max().item())
        if r.shape[3]:
            diff = max(diff, (r - rows[:, :, :, start:start + chunk]).abs().max().item())
    assert diff <= BAR, f"{width}x{height} in chunks of {chunk}: lines differ by {diff:.3g}"


def test_tiled_image_assembled_equals_whole(G, ws):
    width, height, tile = 45, 31, 16
    ys, xs, _, _, whole = lines_and_image(G, ws, width, height)
    out = torch.empty_like(whole)
    for y0 in range(0, height, tile):
        c, _ = G.synthesis.lines(ws, ys[y0:y0 + tile], xs[:1])
        for x0 in range(0, width, tile):
            _, r = G.synthesis.lines(ws, ys[:1], xs[x0:x0 + tile])
            out[:, :, y0:y0 + tile, x0:x0 + tile] = G.synthesis.pixels(ws, c, r)
    assert (out - whole).abs().max().item() <= BAR
