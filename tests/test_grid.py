"""Sizes, seeds, windows, coordinates and pixel conversion (creps.grid)."""

import numpy as np
import pytest
import torch

from creps import grid


@pytest.mark.parametrize("text,size", [("2048x512", (2048, 512)), ("512", (512, 512)), (" 7 X 3 ", (7, 3)),
                                       ("1x1", (1, 1)), ("65536x65536", (65536, 65536))])
def test_parse_size_good(text, size):
    assert grid.parse_size(text) == size


@pytest.mark.parametrize("text", ["0x5", "5x0", "-3x4", "abc", "100000x100000", "3x", "x3", "3x4x5", "1.5x2",
                                  "", "2097152x1"])
def test_parse_size_bad(text):
    with pytest.raises(ValueError):
        grid.parse_size(text)


@pytest.mark.parametrize("text,seeds", [("0,2,5-7", [0, 2, 5, 6, 7]), ("3", [3]), ("4-4", [4]),
                                        (" 1 , 2-3 ", [1, 2, 3]), ("4294967295", [4294967295])])
def test_parse_seeds_good(text, seeds):
    assert grid.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "a", "-1", "7-5", "1,,2", "1-2-3", "4294967296", "1.5"])
def test_parse_seeds_bad(text):
    with pytest.raises(ValueError):
        grid.parse_seeds(text)


def test_parse_window():
    assert grid.parse_window("-0.5,0,1.5,1e0") == grid.Window(-0.5, 0.0, 1.5, 1.0)
    for bad in ["0,0,1", "0,0,1,1,1", "a,b,c,d", "0,0,1,nan", "0,0,inf,1", ""]:
        with pytest.raises(ValueError):
            grid.parse_window(bad)


def test_default_window_extend_keeps_pixel_spacing():
    win = grid.default_window(2048, 512)
    assert win.y0 == 0.0 and win.y1 == 1.0
    assert win.x0 == pytest.approx(0.5 - 2047 / 511 / 2) and win.x1 == pytest.approx(0.5 + 2047 / 511 / 2)
    assert win.x0 == pytest.approx(-1.503, abs=1e-3) and win.x1 == pytest.approx(2.503, abs=1e-3)
    ys, xs = grid.coords(2048, 512)
    assert np.diff(xs.astype(np.float64)).mean() == pytest.approx(np.diff(ys.astype(np.float64)).mean(), rel=1e-6)
    tall = grid.default_window(300, 900)
    assert (tall.x0, tall.x1) == (0.0, 1.0) and tall.y0 == pytest.approx(0.5 - 899 / 299 / 2)
    assert grid.default_window(256, 256) == (0.0, 0.0, 1.0, 1.0)
    assert grid.default_window(1, 40) == (0.0, 0.0, 1.0, 1.0)  # no spacing to keep


def test_default_window_stretch_and_bad_fit():
    assert grid.default_window(2048, 512, "stretch") == (0.0, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        grid.default_window(4, 4, "crop")


def test_coords_are_float64_linspace_cast_to_float32():
    win = grid.Window(-0.3, 0.1, 1.7, 0.9)
    ys, xs = grid.coords(33, 17, win)
    assert ys.dtype == xs.dtype == np.float32 and ys.shape == (17,) and xs.shape == (33,)
    assert np.array_equal(xs, np.array([-0.3 + i * 2.0 / 32 for i in range(33)], dtype=np.float64).astype(np.float32))
    assert np.array_equal(ys, np.linspace(0.1, 0.9, 17).astype(np.float32))
    # at the training size the coordinates are the original's torch.linspace(0, 1, res)
    ys, xs = grid.coords(256, 256)
    assert np.abs(ys - torch.linspace(0, 1, 256).numpy()).max() < 1e-7 and np.array_equal(ys, xs)
    with pytest.raises(ValueError):
        grid.coords(0, 5)


def test_seed_to_z_is_the_originals_latent():
    for seed in (0, 1, 85, 2**32 - 1):
        z = grid.seed_to_z(seed, 512)
        assert z.shape == (1, 512) and z.dtype == np.float32
        assert np.array_equal(z, np.random.RandomState(seed).randn(1, 512).astype(np.float32))
    assert not np.array_equal(grid.seed_to_z(0, 8), grid.seed_to_z(1, 8))


def test_to_uint8_equals_the_originals_conversion():
    rng = np.random.default_rng(0)
    img = rng.normal(0, 0.8, size=(2, 3, 19, 7)).astype(np.float32)
    # exact levels, just below them, and far outside [-1, 1]
    img[0, 0, 0, :] = [-5.0, -1.0039216, -1.0, 0.0, 0.99, 1.0, 3.0]
    img[0, 1, 0, :] = (np.arange(7, dtype=np.float32) - 128 + 0.999) / np.float32(127.5)
    original = (torch.from_numpy(img).permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()
    ours = grid.to_uint8(img)
    assert ours.dtype == np.uint8 and ours.shape == (2, 19, 7, 3)
    assert np.array_equal(ours, original)
    assert ours[0, 0, :, 0].tolist() == [0, 0, 0, 128, 254, 255, 255]  # clamped and truncated
    assert np.array_equal(grid.to_uint8(img[0]), original[0])  # a single image [3, H, W]
