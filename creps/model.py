"""The CREPS generator in PyTorch, exactly as docs/model.md describes it.

Parameter names are the original state-dict keys, so original checkpoints load by a
plain copy. Line tensors are kept channels-last, [N, L, R, C] per line position L and
rank slot R, so every per-position layer is a MatMul; the stage outputs follow the
export contract: cols [N, B, 32, H, R], rows [N, B, 32, W, R].
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from creps import grid

SQRT2 = math.sqrt(2.0)
SQRT_HALF = math.sqrt(0.5)
LRELU_SLOPE = 0.2


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything that fixes the architecture (the published FFHQ/LSUN config by default)."""

    z_dim: int = 512
    w_dim: int = 512
    img_resolution: int = 256
    img_channels: int = 3
    mapping_layers: int = 8
    channel_base: int = 65536
    channel_max: int = 1024
    biline_channels: int = 32
    rank: int = 8
    bandwidth: float = 10.0
    fc_clamp: float | None = 256.0

    def __post_init__(self):
        res = self.img_resolution
        if res < 8 or res & (res - 1):
            raise ValueError(f"img_resolution must be a power of two >= 8, not {res}")
        if self.img_channels != 3:
            raise ValueError("only 3-channel (RGB) generators are supported")
        if min(self.z_dim, self.w_dim, self.mapping_layers, self.rank, self.biline_channels,
               self.channels(res)) < 1:  # channels(res): the last block's, the fewest
            raise ValueError(f"config has a non-positive size: {self}")

    @property
    def block_resolutions(self) -> list[int]:
        """4, 8, ..., img_resolution: the names of the line blocks."""
        return [2**i for i in range(2, int(math.log2(self.img_resolution)) + 1)]

    @property
    def entangled_resolutions(self) -> list[int]:
        """The blocks whose skip output is entangled: b8 ... b_res."""
        return self.block_resolutions[1:]

    @property
    def num_blocks(self) -> int:
        return len(self.entangled_resolutions)

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    @property
    def num_ws(self) -> int:
        # input + b4.fc1 + two fc per later block + the last block's tores.
        return 1 + 1 + 2 * self.num_blocks + 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GeneratorConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown generator config keys: {', '.join(unknown)}")
        return cls(**data)


def lrelu_gain(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LRELU_SLOPE) * SQRT2


class FullyConnectedLayer(nn.Module):
    """y = x @ (weight * lr_mul / sqrt(in)).T + bias * lr_mul, then lrelu * sqrt(2) if asked."""

    def __init__(self, in_features, out_features, lrelu=False, lr_multiplier=1.0, bias_init=0.0):
        super().__init__()
        self.lrelu = lrelu
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):  # (..., in) -> (..., out)
        x = x @ (self.weight * self.weight_gain).t() + self.bias * self.bias_gain
        return lrelu_gain(x) if self.lrelu else x


class ModulatedLayer(nn.Module):
    """Modulated FC (`SynthesisLayer`), or with `tores=True` the `ToResLayer`.

    Exact export-friendly form: y = ((x * s) @ weight.T) * d, with
    d[n, o] = rsqrt(sum_i (weight[o, i] s[n, i])^2 + 1e-8) computed as (s^2) @ (weight^2).T.
    """

    def __init__(self, in_channels, out_channels, w_dim, clamp, tores=False):
        super().__init__()
        self.tores = tores
        self.clamp = clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.style_gain = 1 / math.sqrt(in_channels) if tores else 1.0

    def styles(self, w):  # (N, w_dim) -> (N, in)
        s = self.affine(w)
        return s * self.style_gain if self.tores else s

    def forward(self, x, w):  # x (N, P, in), w (N, w_dim) -> (N, P, out)
        s = self.styles(w)  # (N, in)
        y = (x * s.unsqueeze(1)) @ self.weight.t()  # (N, P, out)
        if not self.tores:
            d = ((s * s) @ (self.weight * self.weight).t() + 1e-8).rsqrt()  # (N, out)
            y = lrelu_gain(y * d.unsqueeze(1) + self.bias)
        else:
            y = y + self.bias
        return y.clamp(-self.clamp, self.clamp) if self.clamp is not None else y


class SynthesisInput(nn.Module):
    """Fourier features of the line coordinates, modulated per slot (`b4.input`)."""

    def __init__(self, channels, w_dim, resolution, rank, bandwidth):
        super().__init__()
        self.channels = channels
        self.rank = rank
        self.register_buffer("freqs", torch.randn(1, channels // 2 * rank) * bandwidth)
        # Unused here (coordinates are inputs); kept so checkpoints round-trip.
        self.register_buffer("coords", torch.linspace(0, 1, resolution).reshape(1, -1, 1, 1).repeat(1, 1, 2, 1))
        self.weight = nn.Parameter(torch.randn(1, channels, 1, 2 * rank))
        self.affine = FullyConnectedLayer(w_dim, channels * 2 * rank, bias_init=1.0)

    def half(self, t, w, d):
        """One half (d=0 columns, d=1 rows) at coordinates t (L,) -> (N, L, R, C)."""
        C, R = self.channels, self.rank
        phase = (t.reshape(-1, 1) * self.freqs) * (2 * math.pi)  # (L, C/2*R)
        phase = phase.reshape(-1, C // 2, R).transpose(1, 2)  # (L, R, C/2)
        feat = torch.sin(torch.cat([phase, phase + math.pi / 2], dim=2))  # (L, R, C)
        styles = self.affine(w).reshape(-1, C, 2 * R)[:, :, d * R : (d + 1) * R]  # (N, C, R)
        mod = self.weight[0, :, 0, d * R : (d + 1) * R] * styles  # (N, C, R)
        return feat.unsqueeze(0) * mod.transpose(1, 2).unsqueeze(1) / math.sqrt(C)  # (N, L, R, C)


class LineBlock(nn.Module):
    """`b{res}`: (input | fc0), fc1, tores, applied per (position, slot)."""

    def __init__(self, cfg: GeneratorConfig, in_channels, out_channels):
        super().__init__()
        if in_channels == 0:
            self.input = SynthesisInput(out_channels, cfg.w_dim, cfg.img_resolution, cfg.rank, cfg.bandwidth)
        else:
            self.fc0 = ModulatedLayer(in_channels, out_channels, cfg.w_dim, cfg.fc_clamp)
        self.fc1 = ModulatedLayer(out_channels, out_channels, cfg.w_dim, cfg.fc_clamp)
        self.tores = ModulatedLayer(out_channels, cfg.biline_channels, cfg.w_dim, cfg.fc_clamp, tores=True)


class Decoder(nn.Sequential):
    """Per-pixel MLP 32 -> 64 -> 128 -> 64 -> 32, lrelu after each (`decoder_*`)."""

    def __init__(self, c):
        widths = [c, 2 * c, 4 * c, 2 * c, c]
        super().__init__(*[FullyConnectedLayer(a, b, lrelu=True) for a, b in zip(widths, widths[1:])])


class OutputBlock(nn.Module):
    """`block0` / `block1`: two modulated layers and a tores added to the image."""

    def __init__(self, in_channels, out_channels, w_dim, img_channels):
        super().__init__()
        self.fc0 = ModulatedLayer(in_channels, out_channels, w_dim, 256.0)
        self.fc1 = ModulatedLayer(out_channels, out_channels, w_dim, 256.0)
        self.tores = ModulatedLayer(out_channels, img_channels, w_dim, 256.0, tores=True)

    def forward(self, f, img, w):  # f (N, P, in), img (N, P, 3), w (N, w_dim)
        f = self.fc1(self.fc0(f, w), w)
        return f, img + self.tores(f, w)


class MappingNetwork(nn.Module):
    def __init__(self, cfg: GeneratorConfig, w_avg_beta=0.998):
        super().__init__()
        self.num_layers = cfg.mapping_layers
        self.num_ws = cfg.num_ws
        self.w_avg_beta = w_avg_beta
        widths = [cfg.z_dim] + [cfg.w_dim] * cfg.mapping_layers
        for i in range(cfg.mapping_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(widths[i], widths[i + 1], lrelu=True, lr_multiplier=0.01))
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None, update_emas=False):
        if c is not None and c.numel():
            raise ValueError("conditional generators (c_dim > 0) are not supported")
        x = z.to(self.w_avg.dtype)  # the network's float type: float32, float64 in exact tests
        x = x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()  # (N, z_dim)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)  # (N, w_dim)
        if update_emas:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)  # (N, num_ws, w_dim)
        if truncation_psi != 1:
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            head = self.w_avg.lerp(ws[:, :cut], truncation_psi)
            ws = torch.cat([head, ws[:, cut:]], dim=1)
        return ws


class SynthesisNetwork(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        prev = 0
        for res in cfg.block_resolutions:
            setattr(self, f"b{res}", LineBlock(cfg, prev, cfg.channels(res)))
            prev = cfg.channels(res)
        # decoder_8 exists in every checkpoint but is never applied (the first F starts f).
        for res in cfg.entangled_resolutions:
            setattr(self, f"decoder_{res}", Decoder(cfg.biline_channels))
        self.decoder_last = Decoder(cfg.biline_channels)
        self.decoder_img = FullyConnectedLayer(cfg.biline_channels, cfg.img_channels)
        c = cfg.biline_channels
        self.block0 = OutputBlock(c, 4 * c, cfg.w_dim, cfg.img_channels)
        self.block1 = OutputBlock(4 * c, 2 * c, cfg.w_dim, cfg.img_channels)

    def lines(self, ws, ys, xs):
        """Line stage: ws (N, num_ws, w_dim), ys (H,), xs (W,) -> cols (N, B, 32, H, R), rows (N, B, 32, W, R)."""
        cfg = self.cfg
        H, W = ys.shape[0], xs.shape[0]
        N, R = ws.shape[0], cfg.rank
        b4 = self.b4
        x = torch.cat([b4.input.half(ys, ws[:, 0], 0), b4.input.half(xs, ws[:, 0], 1)], dim=1)  # (N, H+W, R, C4)
        x = x.reshape(N, (H + W) * R, -1)  # (N, P, C): every later layer is per (position, slot)
        x = b4.fc1(x, ws[:, 1])
        skip, lines, i = None, [], 1
        for res in cfg.entangled_resolutions:
            block = getattr(self, f"b{res}")
            x = block.fc1(block.fc0(x, ws[:, i]), ws[:, i + 1])  # (N, P, C_res)
            y = block.tores(x, ws[:, i + 2])  # (N, P, 32)
            skip = y if skip is None else skip + y
            lines.append(skip * SQRT_HALF)
            i += 2
        out = torch.stack(lines, dim=1).reshape(N, cfg.num_blocks, H + W, R, -1)  # (N, B, H+W, R, 32)
        out = out.permute(0, 1, 4, 2, 3)  # (N, B, 32, H+W, R)
        return out[:, :, :, :H], out[:, :, :, H:]

    def pixels(self, ws, cols, rows):
        """Pixel stage: cols (N, B, 32, h, R), rows (N, B, 32, w, R) -> img (N, 3, h, w)."""
        N, B, C, h, _ = cols.shape
        w = rows.shape[3]
        feats = (cols @ rows.transpose(-1, -2)).permute(0, 1, 3, 4, 2)  # (N, B, h, w, 32)
        feats = feats.reshape(N, B, h * w, C)
        f = feats[:, 0]  # (N, h*w, 32)
        for b, res in enumerate(self.cfg.entangled_resolutions[1:], start=1):
            f = getattr(self, f"decoder_{res}")(f) + feats[:, b]
        f = self.decoder_last(f)
        img = self.decoder_img(f)  # (N, h*w, 3)
        w_last = ws[:, -1]
        f, img = self.block0(f, img, w_last)
        f, img = self.block1(f, img, w_last)
        return img.transpose(1, 2).reshape(N, -1, h, w)

    def forward(self, ws, ys=None, xs=None, height=None, width=None, window=None, fit="extend"):
        if ys is None or xs is None:
            res = self.cfg.img_resolution
            ys_np, xs_np = grid.coords(width or res, height or res, window, fit)
            ys = torch.from_numpy(ys_np).to(ws.device)
            xs = torch.from_numpy(xs_np).to(ws.device)
        cols, rows = self.lines(ws, ys, xs)
        return self.pixels(ws, cols, rows)


class Generator(nn.Module):
    """z (N, z_dim) -> image (N, 3, H, W) in about [-1, 1], at any width x height."""

    def __init__(self, cfg: GeneratorConfig | None = None, **overrides):
        super().__init__()
        cfg = cfg or GeneratorConfig()
        self.cfg = dataclasses.replace(cfg, **overrides) if overrides else cfg
        self.z_dim = self.cfg.z_dim
        self.w_dim = self.cfg.w_dim
        self.num_ws = self.cfg.num_ws
        self.img_resolution = self.cfg.img_resolution
        self.synthesis = SynthesisNetwork(self.cfg)
        self.mapping = MappingNetwork(self.cfg)

    def forward(self, z, truncation_psi=1.0, truncation_cutoff=None, height=None, width=None, window=None,
                fit="extend", c=None):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, height=height, width=width, window=window, fit=fit)
