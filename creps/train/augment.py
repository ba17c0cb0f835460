"""Adaptive discriminator augmentation (Karras et al. 2020, "Training Generative
Adversarial Networks with Limited Data"), in a simpler form than the original pipeline.

Each augmentation is applied to each image independently with probability p:
geometric ones (x-flip, 90-degree rotation, integer translation, isotropic scaling,
arbitrary rotation, anisotropic scaling) are composed into one affine map and applied by
a single bilinear `grid_sample` with reflection padding (the original uses wavelet
up/downsampling instead); colour ones (brightness, contrast, saturation) are composed into
one 4x4 matrix on homogeneous RGB. Everything is differentiable w.r.t. the images.

Random parameters are drawn for a whole global batch at once (`draw`) and then sliced per
process and per round, so the augmentation does not depend on how the batch is split.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

TRANSLATE_STD = 0.125  # integer translation: uniform within +-12.5% of the image size
SCALE_STD = 0.2  # log2 std of isotropic and anisotropic scaling
BRIGHTNESS_STD = 0.2
CONTRAST_STD = 0.5  # log2
SATURATION_STD = 1.0  # log2
LUMA_AXIS = torch.tensor([1.0, 1.0, 1.0]) / math.sqrt(3)


def _rotation(theta: torch.Tensor) -> torch.Tensor:
    """(N,) angles -> (N, 3, 3) homogeneous 2D rotations."""
    c, s = torch.cos(theta), torch.sin(theta)
    m = torch.eye(3).repeat(len(theta), 1, 1)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


def _scaling(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = torch.eye(3).repeat(len(sx), 1, 1)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _translation(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = torch.eye(3).repeat(len(tx), 1, 1)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def draw(n: int, p: float, resolution: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random augmentation of n images with probability p each: {'geom': (n, 2, 3), 'color': (n, 4, 4)}.

    Always draws the same amount of random numbers, so the generator state after a call
    does not depend on p.
    """

    def chosen(prob=p):  # (n,) bool: apply this augmentation to this image?
        return torch.rand(n, generator=gen) < prob

    def uniform(low, high):
        return torch.rand(n, generator=gen) * (high - low) + low

    def normal(std):
        return torch.randn(n, generator=gen) * std

    one = torch.ones(n)
    geom = torch.eye(3).repeat(n, 1, 1)  # (n, 3, 3): output coords -> input coords, in [-1, 1]

    flip = torch.where(chosen(), 1 - 2 * torch.randint(0, 2, (n,), generator=gen).float(), one)
    geom = geom @ _scaling(flip, one)
    quarter = torch.where(chosen(), torch.randint(0, 4, (n,), generator=gen).float(), 0 * one)
    geom = geom @ _rotation(quarter * (math.pi / 2))
    shift = torch.round(torch.stack([uniform(-TRANSLATE_STD, TRANSLATE_STD) for _ in range(2)]) * resolution)
    shift = torch.where(chosen(), shift, 0 * shift) * (2 / resolution)  # (2, n) whole pixels
    geom = geom @ _translation(shift[0], shift[1])
    iso = torch.where(chosen(), torch.exp2(normal(SCALE_STD)), one)
    geom = geom @ _scaling(iso, iso)
    p_rot = 1 - math.sqrt(max(1 - p, 0.0))  # two chances, so that P(any rotation) = p
    geom = geom @ _rotation(torch.where(chosen(p_rot), uniform(-math.pi, math.pi), 0 * one))
    aniso = torch.where(chosen(), torch.exp2(normal(SCALE_STD)), one)
    geom = geom @ _scaling(aniso, 1 / aniso)
    geom = geom @ _rotation(torch.where(chosen(p_rot), uniform(-math.pi, math.pi), 0 * one))

    color = torch.eye(4).repeat(n, 1, 1)  # (n, 4, 4) on homogeneous RGB
    bright = torch.where(chosen(), normal(BRIGHTNESS_STD), 0 * one)
    color = _translation3(bright) @ color
    contrast = torch.where(chosen(), torch.exp2(normal(CONTRAST_STD)), one)
    color = _scaling3(contrast) @ color
    saturation = torch.where(chosen(), torch.exp2(normal(SATURATION_STD)), one)
    axis = torch.outer(LUMA_AXIS, LUMA_AXIS)  # (3, 3) projection onto grey
    sat = torch.eye(4).repeat(n, 1, 1)
    sat[:, :3, :3] = axis + (torch.eye(3) - axis) * saturation.reshape(n, 1, 1)
    color = sat @ color
    return {"geom": geom[:, :2, :], "color": color}


def _translation3(t: torch.Tensor) -> torch.Tensor:
    m = torch.eye(4).repeat(len(t), 1, 1)
    m[:, :3, 3] = t.reshape(-1, 1)
    return m


def _scaling3(s: torch.Tensor) -> torch.Tensor:
    m = torch.eye(4).repeat(len(s), 1, 1)
    m[:, :3, :3] *= s.reshape(-1, 1, 1)
    return m


def apply(images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Augment (N, 3, H, W) images in [-1, 1] with drawn parameters (rows matching N)."""
    N, C, H, W = images.shape
    geom = params["geom"].to(images)  # (N, 2, 3)
    grid = F.affine_grid(geom, [N, C, H, W], align_corners=False)  # (N, H, W, 2)
    x = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    color = params["color"].to(images)  # (N, 4, 4)
    x = color[:, :3, :3] @ x.reshape(N, C, H * W) + color[:, :3, 3:]  # (N, 3, H*W)
    return x.reshape(N, C, H, W)


def slice_params(params: dict[str, torch.Tensor], rows: slice) -> dict[str, torch.Tensor]:
    return {k: v[rows] for k, v in params.items()}


class AdaptiveP:
    """The ADA controller: p moves toward the target sign(D(real)) rate.

    Every `interval` steps, p += sign(rt - target) * (images in the interval) / (speed_kimg * 1000),
    clamped at 0, where rt = E[sign(D(real))] over that interval.
    """

    def __init__(self, target: float, batch: int, interval: int = 4, speed_kimg: float = 500.0, p: float = 0.0):
        self.target = target
        self.batch = batch
        self.interval = interval
        self.speed_kimg = speed_kimg
        self.p = p
        self.sign_sum = 0.0
        self.count = 0

    def accumulate(self, sign_sum: float, count: int) -> None:
        self.sign_sum += sign_sum
        self.count += count

    def step(self, batch_idx: int) -> None:
        """Call after every step (batch_idx counts from 1); adjusts p every `interval` steps."""
        if batch_idx % self.interval or self.count == 0:
            return
        rt = self.sign_sum / self.count
        adjust = math.copysign(1.0, rt - self.target) * (self.batch * self.interval) / (self.speed_kimg * 1000)
        self.p = max(self.p + adjust, 0.0)
        self.sign_sum, self.count = 0.0, 0

    @property
    def rt(self) -> float:
        return self.sign_sum / self.count if self.count else float("nan")

    def state(self) -> dict:
        return {"p": self.p, "sign_sum": self.sign_sum, "count": self.count}

    def load_state(self, state: dict) -> None:
        self.p, self.sign_sum, self.count = float(state["p"]), float(state["sign_sum"]), int(state["count"])
