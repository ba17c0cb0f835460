"""The exported stages as small modules over the model's staged API (docs/architecture.md, Stages).

Each wrapper takes exactly the graph's inputs and returns its outputs, so that
`torch.onnx.export` sees one stage: `mapping` (z, psi -> ws), `lines` (ws, ys, xs ->
cols, rows), `pixels` (ws, cols, rows -> img) and the fused `generator`. Coordinates are
inputs: nothing here computes a size-dependent constant.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F
from torch import nn

from creps.model import LRELU_SLOPE, SQRT2, FullyConnectedLayer, Generator, ModulatedLayer, lrelu_gain

# 'activation': ((x * s) @ W.T) * d, W constant (the model's form); 'folded': x @ (W * s * d).T.
MODULATION_FORMS = ("activation", "folded")


class MappingStage(nn.Module):
    """z (N, z_dim), psi (1,) -> ws (N, num_ws, w_dim); psi pulls ws[:, :cutoff] towards w_avg."""

    def __init__(self, G: Generator, truncation_cutoff: int | None = None):
        super().__init__()
        self.mapping = G.mapping
        num_ws = G.cfg.num_ws
        self.cutoff = num_ws if truncation_cutoff is None else min(int(truncation_cutoff), num_ws)

    def forward(self, z, psi):
        ws = self.mapping(z)  # (N, num_ws, w_dim), untruncated
        w_avg = self.mapping.w_avg  # (w_dim,)
        # The model's lerp(w_avg, ws, psi) with psi a graph input (psi = 1 gives ws unchanged).
        head = w_avg + (ws[:, : self.cutoff] - w_avg) * psi  # (N, cutoff, w_dim)
        if self.cutoff == ws.shape[1]:
            return head
        return torch.cat([head, ws[:, self.cutoff :]], dim=1)


class LinesStage(nn.Module):
    """ws, ys (H,), xs (W,) -> cols (N, B, 32, H, R), rows (N, B, 32, W, R)."""

    def __init__(self, G: Generator):
        super().__init__()
        self.synthesis = G.synthesis

    def forward(self, ws, ys, xs):
        return self.synthesis.lines(ws, ys, xs)


class PixelsStage(nn.Module):
    """ws, cols (N, B, 32, h, R), rows (N, B, 32, w, R) -> img (N, 3, h, w)."""

    def __init__(self, G: Generator):
        super().__init__()
        self.synthesis = G.synthesis

    def forward(self, ws, cols, rows):
        return self.synthesis.pixels(ws, cols, rows)


class FusedGenerator(nn.Module):
    """z, psi, ys, xs -> img (N, 3, H, W): the three stages in one graph."""

    def __init__(self, G: Generator, truncation_cutoff: int | None = None):
        super().__init__()
        self.mapping = MappingStage(G, truncation_cutoff)
        self.lines = LinesStage(G)
        self.pixels = PixelsStage(G)

    def forward(self, z, psi, ys, xs):
        ws = self.mapping(z, psi)
        cols, rows = self.lines(ws, ys, xs)
        return self.pixels(ws, cols, rows)


def folded_forward(layer: ModulatedLayer, x, w):  # x (N, P, in), w (N, w_dim) -> (N, P, out)
    """ModulatedLayer.forward with s (and d) folded into a per-sample weight: x @ (W * s * d).T.

    Exactly the model's layer (same maths, float rounding apart); it multiplies out*in
    numbers per sample instead of P*in + P*out, which wins when P (positions) is large.
    """
    s = layer.styles(w)  # (N, in)
    weight = layer.weight * s.unsqueeze(1)  # (N, out, in)
    if not layer.tores:
        weight = weight * (weight.square().sum(dim=2, keepdim=True) + 1e-8).rsqrt()  # (N, out, in)
    y = x @ weight.transpose(1, 2) + layer.bias  # (N, P, out)
    if not layer.tores:
        y = lrelu_gain(y)
    return y.clamp(-layer.clamp, layer.clamp) if layer.clamp is not None else y


@contextlib.contextmanager
def modulation(module: nn.Module, form: str):
    """Run every ModulatedLayer in `module` in `form` ('activation': the model's own, or 'folded')."""
    if form not in MODULATION_FORMS:
        raise ValueError(f"modulation form {form!r} is not one of {', '.join(MODULATION_FORMS)}")
    layers = [m for m in module.modules() if isinstance(m, ModulatedLayer) and "forward" not in vars(m)]
    layers = layers if form == "folded" else []  # the model's own forward is the activation form
    with patched(layers, folded_forward):
        yield module


@contextlib.contextmanager
def patched(layers: list[nn.Module], forward):
    """Run each of `layers` as `forward(layer, ...)` instead of its own forward, inside the block."""
    for layer in layers:
        layer.forward = functools.partial(forward, layer)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def gemm_forward(layer: FullyConnectedLayer, x):  # x (..., in) -> (..., out)
    """FullyConnectedLayer.forward on 2-D rows, the lrelu gain folded into weight and bias.

    lrelu(y) * g == lrelu(y * g) for g > 0, so each layer is one Gemm (MatMul + bias on
    [rows, in]) and a LeakyRelu, which ONNX Runtime fuses into one FusedGemm; the model's
    3-D MatMul + Add + LeakyRelu + Mul is four passes over the activations. Same maths.
    """
    gain = SQRT2 if layer.lrelu else 1.0
    weight = layer.weight * (layer.weight_gain * gain)  # (out, in), folded to one initializer
    y = torch.addmm(layer.bias * (layer.bias_gain * gain), x.reshape(-1, x.shape[-1]), weight.t())  # (rows, out)
    y = F.leaky_relu(y, LRELU_SLOPE) if layer.lrelu else y
    return y.reshape(*x.shape[:-1], -1)


@contextlib.contextmanager
def gemm_layers(module: nn.Module):
    """Run every FullyConnectedLayer in `module` as `gemm_forward` (the pixel decoders above all)."""
    with patched([m for m in module.modules() if isinstance(m, FullyConnectedLayer)], gemm_forward):
        yield module
