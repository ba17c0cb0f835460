"""The model against the float64 reference written from docs/model.md (tests/reference_creps.py)."""

import math

import pytest
import torch

import reference_creps as ref
from creps import grid
from creps.model import Generator, GeneratorConfig, ModulatedLayer
from tiny_models import TINY, random_generator

BAR = 1e-4  # float32 model vs float64 reference, images of std ~0.5


@pytest.fixture(scope="module")
def G():
    return random_generator(TINY, seed=3)


@pytest.fixture(scope="module")
def z():
    return torch.randn(3, TINY.z_dim, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("tores", [False, True])
def test_modulated_layer_equals_per_sample_weight_form(tores):
    torch.manual_seed(0)
    layer = ModulatedLayer(24, 40, w_dim=16, clamp=256.0, tores=tores).double()
    with torch.no_grad():
        layer.bias.normal_()
        layer.affine.bias.normal_()
    x = torch.randn(3, 50, 24, dtype=torch.float64) * 50  # (N, P, in): large enough to hit the clamp
    w = torch.randn(3, 16, dtype=torch.float64)
    s = layer.affine(w) / (math.sqrt(24) if tores else 1.0)
    expected = ref.modulated_textbook(layer.weight.detach(), layer.bias.detach(), s.detach(), x.transpose(1, 2),
                                      demodulate=not tores, act=not tores, clamp=256.0).transpose(1, 2)
    got = layer(x, w).detach()
    assert (got - expected).abs().max().item() < 1e-12 * expected.abs().max().item()
    if not tores:
        assert expected.abs().max().item() == 256.0  # the clamp was exercised


@pytest.mark.parametrize("psi,cutoff", [(1.0, None), (0.5, None), (0.7, 2), (-0.3, 4), (0.6, 0)])
def test_mapping_and_truncation_equal_reference(G, z, psi, cutoff):
    ws = G.mapping(z, truncation_psi=psi, truncation_cutoff=cutoff)
    expected = ref.mapping(G.state_dict(), TINY.to_dict(), z, psi, cutoff)
    assert ws.shape == (3, TINY.num_ws, TINY.w_dim)
    assert (ws.double() - expected).abs().max().item() < 1e-5
    plain = ref.mapping(G.state_dict(), TINY.to_dict(), z)
    if cutoff is not None:  # ws past the cutoff are left alone
        assert (expected[:, cutoff:] - plain[:, cutoff:]).abs().max().item() < 1e-12
    if psi != 1.0 and cutoff != 0:
        assert (expected[:, :1] - plain[:, :1]).abs().max().item() > 0.01


@pytest.mark.parametrize("width,height", [(16, 16), (23, 9), (6, 21), (1, 17), (19, 1), (40, 40)])
@pytest.mark.parametrize("fit", ["extend", "stretch"])
def test_generator_equals_float64_reference(G, z, width, height, fit):
    with torch.no_grad():
        img = G(z, truncation_psi=0.8, height=height, width=width, fit=fit)
    ys, xs = grid.coords(width, height, fit=fit)
    expected = ref.generate(G.state_dict(), TINY.to_dict(), z, 0.8, None, ys, xs)
    assert img.dtype == torch.float32 and img.shape == (3, 3, height, width)
    diff = (img.double() - expected).abs().max().item()
    assert diff < BAR, f"{width}x{height} {fit}: max abs diff {diff:.3g}"
    assert expected.std().item() > 0.1  # a real image, not a constant


def test_window_and_truncation_cutoff_equal_reference(G, z):
    window = grid.Window(-0.7, 0.2, 1.9, 0.45)
    with torch.no_grad():
        img = G(z, truncation_psi=0.5, truncation_cutoff=3, height=11, width=29, window=window)
    ys, xs = grid.coords(29, 11, window)
    expected = ref.generate(G.state_dict(), TINY.to_dict(), z, 0.5, 3, ys, xs)
    assert (img.double() - expected).abs().max().item() < BAR


def test_first_tores_and_decoder_8_are_never_applied(G, z):
    """The b4-tores / decoder_8 trap: changing those tensors changes nothing."""
    G2 = random_generator(TINY, seed=3)
    with torch.no_grad():
        for name, tensor in G2.state_dict().items():
            if name.startswith(("synthesis.b4.tores.", "synthesis.decoder_8.")):
                tensor.normal_()
        a = G(z, height=8, width=12)
        b = G2(z, height=8, width=12)
    assert torch.equal(a, b)
    assert "synthesis.b4.tores.weight" in G.state_dict() and "synthesis.decoder_8.0.weight" in G.state_dict()


def test_stage_shapes_follow_design_table(G, z):
    N, H, W, B, R = 3, 9, 14, TINY.num_blocks, TINY.rank
    assert B == int(math.log2(TINY.img_resolution)) - 2
    ws = G.mapping(z, truncation_psi=0.7)
    assert ws.shape == (N, TINY.num_ws, TINY.w_dim)
    ys, xs = (torch.from_numpy(v) for v in grid.coords(W, H))
    cols, rows = G.synthesis.lines(ws, ys, xs)
    assert cols.shape == (N, B, 32, H, R) and rows.shape == (N, B, 32, W, R)
    img = G.synthesis.pixels(ws, cols[:, :, :, 2:5], rows[:, :, :, 3:10])
    assert img.shape == (N, 3, 3, 7)


def test_published_config_shapes_and_parameter_count():
    cfg = GeneratorConfig()
    with torch.device("meta"):
        G = Generator(cfg)
    params = sum(p.numel() for p in G.parameters())
    assert 30.0e6 < params < 31.0e6
    assert [cfg.channels(r) for r in cfg.block_resolutions] == [1024] * 5 + [512, 256]
    assert cfg.num_ws == 15 and cfg.num_blocks == 6
    assert ref.num_ws(cfg.to_dict()) == cfg.num_ws
