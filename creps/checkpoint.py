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

import dataclasses
import json
import logging
import math
import numbers
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.overrides import TorchFunctionMode

from creps.errors import CheckpointError
from creps.files import atomic_path
from creps.model import Generator, GeneratorConfig

log = logging.getLogger(__name__)

FORMAT = "creps-checkpoint"
VERSION = "1"
GENERATOR_PREFIXES = ("G_ema.", "G.", "")
# The largest size a config read from a file may state (the published configs use at most 65536);
# any three such sizes multiply within int64.
MAX_SIZE = 2**20


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


def config_from_dict(data, source: str) -> GeneratorConfig:
    """Our config from untrusted data (a checkpoint's creps.config, an original pickle's init
    kwargs): every field of its declared type and range before anything is built."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{source}: the generator config is a {type(data).__name__}, not a mapping")
    values = {}
    for field in dataclasses.fields(GeneratorConfig):
        if field.name not in data:
            continue
        value, optional = data[field.name], "None" in field.type
        if field.type == "int":  # numbers.Integral: numpy ints from a pickle too; never a bool
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and 1 <= value <= MAX_SIZE
            want, cast = f"an integer in 1..{MAX_SIZE}", int
        else:
            ok = (value is None and optional) or (isinstance(value, numbers.Real) and not isinstance(value, bool)
                                                  and math.isfinite(value) and value > 0)
            want, cast = "a positive number" + (" or null" if optional else ""), float
        if not ok:
            raise CheckpointError(f"{source}: generator config {field.name} = {value!r:.40} must be {want}")
        values[field.name] = None if value is None else cast(value)
    try:
        return GeneratorConfig.from_dict({**data, **values})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: unsupported generator config ({exc})") from None


class _Budget(TorchFunctionMode):
    """Counts the numbers every torch call makes while a model is built and refuses, before a
    factory call allocates, to go past `budget`. (The meta device would allocate nothing, but
    its first use imports ~800 modules: seconds on every load.)"""

    FACTORIES = (torch.randn, torch.zeros, torch.ones, torch.empty, torch.full)

    def __init__(self, budget: int, source: str):
        super().__init__()
        self.left, self.source = budget, source

    def take(self, count: int) -> None:
        self.left -= count
        if self.left < 0:
            raise CheckpointError(f"{self.source}: the config describes a model far larger than the checkpoint")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.FACTORIES:  # size as (*ints) or one sequence; torch.full(size, value)
            size = args[0] if args and isinstance(args[0], (tuple, list, torch.Size)) else args
            self.take(math.prod(size))
        elif func is torch.linspace:
            self.take(args[2] if len(args) > 2 else kwargs["steps"])
        out = func(*args, **kwargs)
        if func not in self.FACTORIES and func is not torch.linspace and isinstance(out, torch.Tensor):
            self.take(out.numel())
        return out


def generator_from_state(cfg: GeneratorConfig, state: dict[str, torch.Tensor], source: str) -> Generator:
    """Build a Generator and copy `state` in, insisting that every key and shape lines up.

    The model is built under an allocation budget of the checkpoint's own size, so a damaged
    config is refused at once instead of filling memory before the shapes can be compared.
    """
    if cfg.mapping_layers + cfg.num_blocks > len(state):  # every layer holds tensors; 65536 tiny ones take minutes
        raise CheckpointError(f"{source}: the config has more layers than the checkpoint has tensors ({len(state)})")
    held = sum(t.numel() for t in state.values())
    with _Budget(4 * held + 2**20, source):  # room for initialisation's temporaries
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
        data = json.loads(meta["creps.config"])
    except (KeyError, ValueError, RecursionError) as exc:  # ValueError: not JSON; RecursionError: nested too deep
        raise CheckpointError(f"{path}: bad creps.config ({type(exc).__name__}: {exc})") from None
    cfg = config_from_dict(data, f"{path}: creps.config")
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
