"""The torch device a command runs on, checked before any work: one line for a bad name or a missing GPU."""

from __future__ import annotations

import torch

from creps.errors import CrepsError


def pick_device(name: str) -> torch.device:
    """`cpu`, `cuda` or `cuda:N` as a torch.device, refused (CrepsError) unless this PyTorch can use it."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CrepsError(f"device {name!r} is not cpu or cuda[:N]") from None
    if device.type not in ("cpu", "cuda"):
        raise CrepsError(f"device {name!r} is not cpu or cuda[:N]")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CrepsError(f"device {name!r} asked for, but this PyTorch sees no CUDA device (use --device cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CrepsError(f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
