"""Training snapshots: one safetensors checkpoint holding everything needed to continue.

`network-snapshot-<nimg:09d>.safetensors` (images seen, so names are unique and sort in
training order at any --snap-kimg) is an ordinary creps checkpoint (so
`creps.load_generator` reads its G_ema) with, beside `G_ema.*`, `G.*` and `D.*`:
  `state.G_opt.<i>.<exp_avg|exp_avg_sq|step>`, `state.D_opt.<i>...`  Adam moments per parameter index,
  `state.rng`                                                        the training RNG state,
  `state.pl_mean`                                                    the path-length running mean,
and in the metadata `creps.train` (JSON): counters, ADA state, the discriminator config
and the options the run was started with. It is written by `save_checkpoint`, i.e. to a
temporary name and renamed: a snapshot file is complete or absent.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from creps.checkpoint import read_checkpoint, save_checkpoint
from creps.errors import CheckpointError

log = logging.getLogger(__name__)

# Older runs named snapshots by kimg in 6 digits, which gave every snapshot of a --snap-kimg
# below 1 the same name; --resume auto still reads those.
SNAPSHOT_PATTERN = re.compile(r"network-snapshot-(\d{9}|\d{6})\.safetensors$")
TRAIN_KEY = "creps.train"


def nimg_tag(cur_nimg: int) -> str:
    """Images seen in 9 digits (up to a million kimg): one name per snapshot, sorting in training order."""
    return f"{cur_nimg:09d}"


def snapshot_name(cur_nimg: int) -> str:
    return f"network-snapshot-{nimg_tag(cur_nimg)}.safetensors"


class TensorTable(torch.nn.Module):
    """A flat name -> tensor table that `save_checkpoint` can write like a network."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        super().__init__()
        self.tensors = tensors

    def state_dict(self, *args, **kwargs):
        return self.tensors


def optimizer_tensors(name: str, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for index, state in opt.state_dict()["state"].items():
        for field, value in state.items():
            out[f"{name}.{index}.{field}"] = torch.as_tensor(value)
    return out


def load_optimizer(name: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    prefix = f"state.{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, field = key[len(prefix):].split(".")
            state.setdefault(int(index), {})[field] = value
    current = opt.state_dict()
    opt.load_state_dict({"state": state, "param_groups": current["param_groups"]})


def save_snapshot(path: Path, networks: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                  extra_tensors: dict[str, torch.Tensor], train_meta: dict, cfg) -> None:
    tensors = dict(extra_tensors)
    for name, opt in optimizers.items():
        tensors.update(optimizer_tensors(name, opt))
    save_checkpoint(path, {**networks, "state": TensorTable(tensors)}, cfg,
                    metadata={TRAIN_KEY: json.dumps(train_meta)})


def read_snapshot(path: Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(tensors, creps.train metadata, creps.config) of a training snapshot."""
    tensors, meta = read_checkpoint(path)
    if TRAIN_KEY not in meta or not any(k.startswith("D.") for k in tensors):
        raise CheckpointError(f"{path}: a generator checkpoint, not a training snapshot (no D or training state)")
    return tensors, json.loads(meta[TRAIN_KEY]), json.loads(meta["creps.config"])


def prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def snapshot_nimg(path: Path) -> int | None:
    """The image counter of a snapshot, or None when the file is not a readable snapshot."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return int(json.loads(meta[TRAIN_KEY])["cur_nimg"])
    except (SafetensorError, OSError, KeyError, ValueError, TypeError):
        return None


def newest_snapshot(outdir: Path) -> Path | None:
    """The snapshot in `outdir` with the most images seen, as its metadata says (None if there is none)."""
    found = []
    for path in sorted(outdir.glob("network-snapshot-*.safetensors")) if outdir.is_dir() else []:
        if not SNAPSHOT_PATTERN.search(path.name):
            continue
        nimg = snapshot_nimg(path)
        if nimg is None:
            log.warning("ignoring unreadable snapshot %s", path)
            continue
        found.append((nimg, path))
    return max(found)[1] if found else None


