"""StyleGAN2's residual discriminator (Karras et al. 2020, "Analyzing and Improving the Image
Quality of StyleGAN", config F, `resnet` architecture), written from the paper.

Equalised learning rate (weights ~ N(0, 1), scaled by 1/sqrt(fan_in) at run time), leaky
ReLU with gain sqrt(2) and activations clamped to +-256. Each block halves the
resolution: 3x3 conv, [1, 3, 3, 1] blur-downsample, 3x3 conv, plus a 1x1 residual skip
on the blurred input, summed with a factor sqrt(0.5). The 4x4 epilogue appends the
minibatch standard deviation, then conv 3x3, FC and the scalar output.

Minibatch stddev groups *consecutive* samples, so a batch split across processes (or
into rounds) forms the same groups as one large batch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from creps.model import SQRT_HALF, FullyConnectedLayer, lrelu_gain


@dataclass(frozen=True)
class DiscriminatorConfig:
    img_resolution: int = 256
    channel_base: int = 32768
    channel_max: int = 512
    mbstd_group: int = 4
    clamp: float = 256.0

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    @property
    def block_resolutions(self) -> list[int]:
        """img_resolution, ..., 8: each block goes from res to res // 2."""
        return [2**i for i in range(int(math.log2(self.img_resolution)), 2, -1)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Conv2d(nn.Module):
    """Equalised-lr conv; optional lrelu*sqrt(2) and clamp."""

    def __init__(self, in_channels, out_channels, kernel, bias=True, activate=True, clamp=None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.gain = 1 / math.sqrt(in_channels * kernel * kernel)
        self.activate = activate
        self.clamp = clamp

    def forward(self, x):  # (N, in, H, W) -> (N, out, H, W)
        x = F.conv2d(x, self.weight * self.gain, self.bias, padding=self.weight.shape[-1] // 2)
        if self.activate:
            x = lrelu_gain(x)
        return x.clamp(-self.clamp, self.clamp) if self.clamp is not None else x


def blur_downsample(x: torch.Tensor) -> torch.Tensor:
    """Separable [1, 3, 3, 1] low-pass, then stride 2: (N, C, H, W) -> (N, C, H/2, W/2)."""
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0], device=x.device, dtype=x.dtype)
    kernel = (taps[:, None] * taps[None, :]) / taps.sum() ** 2  # (4, 4), sums to 1
    C = x.shape[1]
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    return F.conv2d(x, kernel.expand(C, 1, 4, 4), stride=2, groups=C)


class DiscriminatorBlock(nn.Module):
    def __init__(self, in_channels, out_channels, clamp):
        super().__init__()
        self.conv0 = Conv2d(in_channels, in_channels, 3, clamp=clamp)
        self.conv1 = Conv2d(in_channels, out_channels, 3, clamp=clamp)
        self.skip = Conv2d(in_channels, out_channels, 1, bias=False, activate=False)

    def forward(self, x):  # (N, C_in, H, W) -> (N, C_out, H/2, W/2)
        skip = self.skip(blur_downsample(x))
        x = self.conv1(blur_downsample(self.conv0(x)))
        return (x + skip) * SQRT_HALF


def minibatch_stddev(x: torch.Tensor, group: int) -> torch.Tensor:
    """Append one channel: the stddev over each group of `group` consecutive samples."""
    N, C, H, W = x.shape
    G = min(group, N)
    y = x.reshape(N // G, G, C, H, W)  # (n, G, C, H, W)
    y = (y.var(dim=1, unbiased=False) + 1e-8).sqrt()  # (n, C, H, W)
    y = y.mean(dim=(1, 2, 3))  # (n,)
    y = y.repeat_interleave(G).reshape(N, 1, 1, 1).expand(N, 1, H, W)  # (N, 1, H, W)
    return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """image (N, 3, R, R) in [-1, 1] -> logits (N, 1)."""

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        self.cfg = cfg
        top = cfg.img_resolution
        self.fromrgb = Conv2d(3, cfg.channels(top), 1, clamp=cfg.clamp)
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(cfg.channels(res), cfg.channels(res // 2), cfg.clamp) for res in cfg.block_resolutions
        )
        c4 = cfg.channels(4)
        self.conv = Conv2d(c4 + 1, c4, 3, clamp=cfg.clamp)
        self.fc = FullyConnectedLayer(c4 * 16, c4, lrelu=True)
        self.out = FullyConnectedLayer(c4, 1)

    def forward(self, img):
        N = img.shape[0]
        if N % min(self.cfg.mbstd_group, N):
            raise ValueError(f"batch {N} is not a multiple of the minibatch-stddev group {self.cfg.mbstd_group}")
        x = self.fromrgb(img)  # (N, C_R, R, R)
        for block in self.blocks:
            x = block(x)  # (N, C_res/2, res/2, res/2)
        x = self.conv(minibatch_stddev(x, self.cfg.mbstd_group))  # (N, C4, 4, 4)
        return self.out(self.fc(x.flatten(1)))  # (N, 1)
