"""The StyleGAN2 losses, per sample (the loop weights and sums them).

Non-saturating logistic loss for G and D, the R1 gradient penalty on real images and the
path-length penalty. No style mixing (CREPS trains without it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(D(G(z))) per sample: (N, 1) -> (N,)."""
    return F.softplus(-fake_logits).flatten()


def discriminator_loss(fake_logits: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """-log(1 - sigmoid(D(fake))) - log sigmoid(D(real)) per sample: (N,)."""
    return (F.softplus(fake_logits) + F.softplus(-real_logits)).flatten()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """|d D(x) / d x|^2 per sample (x = the un-augmented real images, requires_grad): (N,)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)  # (N, 3, H, W)
    return grad.square().sum(dim=(1, 2, 3))


def path_lengths(G, z: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """|J_w^T y| per sample, y = image-space noise / sqrt(H*W) (noise ~ N(0, 1), (N, 3, H, W)): (N,)."""
    ws = G.mapping(z)  # (N, num_ws, w_dim)
    img = G.synthesis(ws)  # (N, 3, H, W)
    H, W = img.shape[2:]
    (grad,) = torch.autograd.grad((img * noise).sum() / (H * W) ** 0.5, ws, create_graph=True)
    return grad.square().sum(dim=2).mean(dim=1).sqrt()
