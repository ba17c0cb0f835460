"""Our checkpoint format, and `load_generator` for ours and the original's pickles.

Layout: one safetensors file. Tensor names are the original state-dict keys
(`mapping.fc0.weight`, `synthesis.b8.fc1.affine.bias`, ...), under a prefix per network
for training snapshots (`G_ema.`, `G.`, `D.`); a plain generator file has no prefix.
The safetensors metadata (string -> string) holds:
  `creps.format`  = "creps-checkpoint"
  `creps.version` = "1"
  `creps.config`  = the GeneratorConfig as JSON
plus any other `creps.*` entries a writer adds (the trainer's counters, for instance).
Nothing in the file is executed when it is read.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from creps.errors import CheckpointError
from creps.files import atomic_path
from creps.model import Generator, GeneratorConfig

log = logging.getLogger(__name__)

FORMAT = "creps-checkpoint"
VERSION = "1"
GENERATOR_PREFIXES = ("G_ema.", "G.", "")


def save_checkpoint(path, networks: dict[str, torch.nn.Module] | torch.nn.Module, cfg: GeneratorConfig,
                    metadata: dict[str, str] | None = None) -> None:
    """Write a generator (or {'G_ema': ..., 'G': ..., 'D': ...}) atomically."""
    if isinstance(networks, torch.nn.Module):
        networks = {"": networks}
    tensors = {}
    for name, net in networks.items():
        prefix = f"{name}." if name else ""
        for key, value in net.state_dict().items():
            tensors[prefix + key] = value.detach().to("cpu", torch.float32).contiguous()
    meta = {"creps.format": FORMAT, "creps.version": VERSION, "creps.config": json.dumps(cfg.to_dict())}
    meta.update(metadata or {})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_checkpoint(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of one of our checkpoints."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    if meta.get("creps.format") != FORMAT:
        raise CheckpointError(f"{path}: a safetensors file, but not a creps checkpoint (no creps.format)")
    if meta.get("creps.version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {meta.get('creps.version')!r}, this creps reads {VERSION!r}"
        )
    return tensors, meta


def generator_from_state(cfg: GeneratorConfig, state: dict[str, torch.Tensor], source: str) -> Generator:
    """Build a Generator and copy `state` in, insisting that every key and shape lines up."""
    G = Generator(cfg)
    expected = G.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{source}: tensors do not match the config"
            + (f"; missing {', '.join(missing[:5])}" if missing else "")
            + (f"; unexpected {', '.join(extra[:5])}" if extra else "")
        )
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(state[key].shape)}, the config needs {tuple(value.shape)}"
            )
    G.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    return G.eval().requires_grad_(False)


def load_checkpoint(path) -> Generator:
    tensors, meta = read_checkpoint(path)
    try:
        cfg = GeneratorConfig.from_dict(json.loads(meta["creps.config"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: bad creps.config ({exc})") from exc
    for prefix in GENERATOR_PREFIXES:
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)} if prefix else tensors
        if "mapping.w_avg" in state:
            log.info("%s: generator %s", path, prefix.rstrip(".") or "(unprefixed)")
            return generator_from_state(cfg, state, str(path))
    raise CheckpointError(f"{path}: no generator in the checkpoint (looked for G_ema., G. and unprefixed keys)")


def load_generator(path) -> Generator:
    """Load a generator from our safetensors checkpoint or an original CREPS pickle.

    Original pickles are read by a restricted unpickler (creps.original): nothing they
    carry is executed. G_ema is preferred over G.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        head = f.read(16)
    # safetensors: an 8-byte little-endian header length, then the JSON header. Its first byte
    # may well be 0x80, so look for the JSON before taking the file for a pickle.
    looks_safetensors = head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= path.stat().st_size - 8
    if not looks_safetensors and (path.suffix == ".pkl" or head[:1] == b"\x80"):
        from creps.original import load_original_pickle

        return load_original_pickle(path)
    return load_checkpoint(path)
