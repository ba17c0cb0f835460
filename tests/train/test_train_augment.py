"""ADA: the pipeline's maps against exact pixel operations, and the p controller's arithmetic."""

import math

import pytest
import torch

from creps.train import augment


def params_for(geom_3x3, color_4x4, n):
    return {"geom": geom_3x3[:2].expand(n, 2, 3).clone(), "color": color_4x4.expand(n, 4, 4).clone()}


IDENTITY3, IDENTITY4 = torch.eye(3), torch.eye(4)


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (1, 3, 9, 9)])
def test_identity_flip_and_rot90_are_exact(shape):
    x = torch.rand(shape) * 2 - 1
    assert torch.allclose(augment.apply(x, params_for(IDENTITY3, IDENTITY4, shape[0])), x, atol=1e-5)
    flip = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    assert torch.allclose(augment.apply(x, params_for(flip, IDENTITY4, shape[0])), x.flip(3), atol=1e-5)
    rot = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    out = augment.apply(x, params_for(rot, IDENTITY4, shape[0]))
    # output (x, y) reads input (-y, x): torch.rot90 with k=1 on (H, W)
    assert torch.allclose(out, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)


def test_integer_translation_moves_whole_pixels_with_reflection():
    x = torch.rand(1, 3, 8, 8)
    shift = torch.eye(3)
    shift[0, 2] = 2 * 2 / 8  # output x reads input x + 2 pixels
    out = augment.apply(x, params_for(shift, IDENTITY4, 1))
    assert torch.allclose(out[..., :6], x[..., 2:], atol=1e-5)
    # reflection padding: the column past the right edge mirrors the last ones
    assert torch.allclose(out[..., 6], x[..., 7], atol=1e-5) and torch.allclose(out[..., 7], x[..., 6], atol=1e-5)


def test_colour_maps():
    x = torch.rand(2, 3, 4, 4) * 2 - 1
    bright = torch.eye(4)
    bright[:3, 3] = 0.25
    assert torch.allclose(augment.apply(x, params_for(IDENTITY3, bright, 2)), x + 0.25, atol=1e-5)
    grey = torch.eye(4)
    grey[:3, :3] = torch.full((3, 3), 1 / 3)  # saturation 0: projection on the luma axis
    out = augment.apply(x, params_for(IDENTITY3, grey, 2))
    assert torch.allclose(out, x.mean(dim=1, keepdim=True).expand_as(x), atol=1e-5)


def test_draw_with_p_zero_is_identity_and_consumes_the_same_randomness():
    g0, g1 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    params = augment.draw(6, 0.0, 16, g0)
    assert torch.allclose(params["geom"], torch.eye(3)[:2].expand(6, 2, 3))
    assert torch.allclose(params["color"], torch.eye(4).expand(6, 4, 4))
    augment.draw(6, 0.7, 16, g1)
    assert torch.equal(g0.get_state(), g1.get_state())


def test_draw_with_p_one_changes_every_image_and_keeps_translation_integer():
    gen = torch.Generator().manual_seed(0)
    params = augment.draw(64, 1.0, 16, gen)
    assert not torch.allclose(params["geom"], torch.eye(3)[:2].expand(64, 2, 3), atol=1e-3)
    # colour maps with p=1: every image gets a contrast and saturation change
    assert (params["color"] - torch.eye(4)).abs().amax(dim=(1, 2)).min() > 0


def test_adaptive_p_moves_by_the_original_rate():
    ada = augment.AdaptiveP(target=0.6, batch=32, interval=4, speed_kimg=500)
    step = 32 * 4 / 500_000
    for i in range(1, 5):
        ada.accumulate(0.9 * 32, 32)  # overfitting D: rt = 0.9 > 0.6
        ada.step(i)
    assert ada.p == pytest.approx(step)
    for i in range(5, 9):
        ada.accumulate(-0.5 * 32, 32)
        ada.step(i)
    assert ada.p == pytest.approx(0.0)
    for i in range(9, 13):
        ada.accumulate(-32, 32)
        ada.step(i)
    assert ada.p == 0.0  # clamped at zero
    state = ada.state()
    other = augment.AdaptiveP(0.6, 32)
    other.load_state(state)
    assert other.state() == state and math.isnan(other.rt)
