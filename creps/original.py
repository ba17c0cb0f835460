"""Safe import of original CREPS pickles (`{'G', 'D', 'G_ema', ...}`, StyleGAN3-style).

The original stores each persistent module as a call to
`torch_utils.persistence._reconstruct_persistent_obj(meta)`, where meta carries the class
name, the source text of its module, and the object state (parameters, buffers,
submodules, init kwargs). Some modules (`SynthesisInput`, `torch.nn.Sequential`) are
stored as plain class references. Tensors come through `torch.storage._load_from_bytes`,
which in torch itself runs a full `torch.load` on a byte blob.

Here a restricted unpickler admits only the globals a checkpoint needs, each mapped to
an inert stand-in: persistent objects become records of (class name, state), plain
modules records of their state, storage blobs are loaded weights-only. The embedded
source is never executed or imported. Any other global is refused by name. Our model is
then built from the recorded init kwargs and filled with the recorded tensors.
"""

from __future__ import annotations

import collections
import io
import logging
import pickle
import pickletools
import re
import struct
import time

import numpy as np
import torch

from creps.checkpoint import config_from_dict, generator_from_state
from creps.errors import CheckpointError
from creps.model import Generator, GeneratorConfig

log = logging.getLogger(__name__)


class ModuleRecord:
    """A module as the pickle describes it; nothing of its code is run."""

    def __init__(self, class_name: str, state: dict | None = None):
        self.class_name = class_name
        self.state = state or {}

    def __setstate__(self, state):  # plain (non-persistent) modules arrive through NEWOBJ + BUILD
        if not isinstance(state, dict):
            raise CheckpointError(f"{self.class_name}: state is not a dict")
        self.state = state


def _reconstruct_persistent_obj(meta):
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise CheckpointError("persistent object without a class name")
    return ModuleRecord(meta["class_name"], dict(meta.get("state") or {}))


def _plain_module(name):
    """A stand-in class for a module stored by reference; NEWOBJ makes it without __init__."""
    return type(name, (ModuleRecord,), {"class_name": name, "state": {}})


def _load_storage_bytes(blob):
    """Stand-in for torch.storage._load_from_bytes: the blob is loaded weights-only."""
    if not isinstance(blob, (bytes, bytearray)):
        raise CheckpointError("storage blob is not bytes")
    try:
        return torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        # torch's message spans many lines; keep the name of what it refused.
        refused = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if refused:
            raise CheckpointError(
                f"refused: a tensor storage in the pickle asks for {refused.group(1)}, which a tensor never needs"
            ) from None
        raise CheckpointError(f"a tensor storage in the pickle is corrupt ({one_line(exc)})") from None
    except (AssertionError, RuntimeError, EOFError, KeyError, ValueError, TypeError, IndexError) as exc:
        # torch's legacy-format reader checks a damaged blob with asserts and lookups of its own.
        raise CheckpointError(f"a tensor storage in the pickle is corrupt ({one_line(exc)})") from None


def one_line(exc: BaseException, limit: int = 160) -> str:
    """An exception as one short line: its text may quote bytes of the file, newlines included."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


class _Dtype:
    """`numpy.dtype(name, align, copy)` plus the state BUILD gives it, for plain numbers only.

    numpy's own dtype.__setstate__ trusts its state (a damaged one crashes the interpreter), so
    the pickle gets this record, and a real dtype is made from its name and byte order alone.
    """

    def __init__(self, name, align=False, copy=False):
        if not isinstance(name, str) or not re.fullmatch(r"[biuf][1-8]", name):
            raise CheckpointError(f"refused: a numpy dtype {name!r:.40}, not a plain number (a checkpoint's gains are)")
        self.name, self.order = name, "="

    def __setstate__(self, state):  # numpy writes (version, byte order, subarray, names, fields, ...)
        if not (isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "=", "|")):
            raise CheckpointError("a numpy dtype in the pickle has a damaged state")
        self.order = state[1]

    def resolve(self) -> np.dtype:
        return np.dtype(self.name).newbyteorder(self.order)


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, _Dtype):
        raise CheckpointError("a numpy scalar in the pickle without a plain numeric dtype")
    if data is not None and not isinstance(data, bytes):
        raise CheckpointError("a numpy scalar in the pickle without its bytes")
    return np.frombuffer(data, dtype=dtype.resolve(), count=1)[0] if data is not None else dtype.resolve().type()


class _EasyDict(dict):
    pass


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    """torch._utils._rebuild_tensor_v2 on arguments checked first (torch asserts on some, crashes on none)."""
    sizes = (size, stride)
    if not (isinstance(storage, torch.storage.TypedStorage) and type(offset) is int and offset >= 0
            and all(isinstance(s, tuple) and all(type(n) is int and n >= 0 for n in s) for s in sizes)
            and len(size) == len(stride) and isinstance(requires_grad, bool) and isinstance(hooks, (dict, type(None))) and not metadata):
        raise CheckpointError("a tensor in the pickle has damaged storage, offset, size or stride")
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks or {})


def _rebuild_parameter(data, requires_grad, hooks):
    if not (isinstance(data, torch.Tensor) and isinstance(requires_grad, bool) and isinstance(hooks, dict)):
        raise CheckpointError("a parameter in the pickle is damaged")
    return torch._utils._rebuild_parameter(data, requires_grad, hooks)


_PLAIN_MODULES = {
    ("training.networks_creps", "SynthesisInput"),
    ("torch.nn.modules.container", "Sequential"),
    ("torch.nn.modules.container", "ModuleList"),
    ("torch.nn.modules.container", "ModuleDict"),
    ("torch.nn.modules.linear", "Identity"),
}

_ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _Dtype,
}
_ALLOWED.update({key: _plain_module(key[1]) for key in _PLAIN_MODULES})


def check_memo_indices(raw: bytes) -> None:
    """Refuse a memo index past the data's length. The C unpickler grows its memo array to the
    index a PUT names (LONG_BINPUT: up to 2**32), allocating and zeroing 8 bytes a slot, before
    reading on: minutes for one damaged byte. A pickler numbers memo entries from 0, one per
    memoized object, so a real index is always below the number of bytes."""
    for op, arg, _ in pickletools.genops(raw):
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and arg > len(raw):
            raise CheckpointError(f"a memo index {arg} in the pickle is past its end (a damaged file)")


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"refused: the pickle asks for {module}.{name}, which a CREPS checkpoint never needs"
            ) from None

    def persistent_load(self, pid):
        raise CheckpointError("refused: the pickle uses persistent ids (not a CREPS network pickle)")


def flat_state(record: ModuleRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """Parameters and buffers of a record tree as a state dict with dotted keys."""
    out = {}
    for kind in ("_parameters", "_buffers", "_modules"):
        if not isinstance(record.state.get(kind) or {}, dict):
            raise CheckpointError(f"{prefix or 'the generator'}: {kind} is not a dict")
    for kind in ("_parameters", "_buffers"):
        for name, value in (record.state.get(kind) or {}).items():
            if value is not None:
                if not isinstance(value, torch.Tensor):
                    raise CheckpointError(f"{prefix}{name} is not a tensor")
                out[prefix + name] = value.detach()
    for name, child in (record.state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, ModuleRecord):
            raise CheckpointError(f"{prefix}{name} is not a module")
        out.update(flat_state(child, f"{prefix}{name}."))
    return out


_MAPPING_DEFAULTS = {"embed_features": None, "layer_features": None, "activation": "lrelu",
                     "lr_multiplier": 0.01, "w_avg_beta": 0.998}
_IGNORED_KWARGS = {"num_fp16_res", "conv_clamp"}  # fp16 only changes rounding; we compute in fp32


def config_from_kwargs(kwargs: dict, state: dict[str, torch.Tensor]) -> GeneratorConfig:
    """Our config from the original Generator's init kwargs (defaults as its signatures)."""
    if not isinstance(kwargs, dict) or not isinstance(kwargs.get("mapping_kwargs") or {}, dict):
        raise CheckpointError("the generator's init kwargs are not a dict of settings")
    kwargs = dict(kwargs)
    mapping = dict(kwargs.pop("mapping_kwargs", None) or {})
    if kwargs.pop("c_dim", 0):
        raise CheckpointError("conditional generators (c_dim > 0) are not supported")
    num_layers = mapping.pop("num_layers", 8)
    for key, default in _MAPPING_DEFAULTS.items():
        value = mapping.pop(key, default)
        if value != default and not (key == "layer_features" and value == kwargs.get("w_dim")):
            raise CheckpointError(f"unsupported mapping setting {key}={value!r:.60}")
    if mapping:
        raise CheckpointError(f"unsupported mapping settings: {', '.join(sorted(map(str, mapping)))}")
    for key in _IGNORED_KWARGS & set(kwargs):
        kwargs.pop(key)
    input_weight = state.get("synthesis.b4.input.weight")  # (1, channels, 1, 2 * rank)
    rank = input_weight.shape[-1] // 2 if input_weight is not None and input_weight.ndim else 8
    try:
        values = dict(z_dim=kwargs.pop("z_dim"), w_dim=kwargs.pop("w_dim"),
                      img_resolution=kwargs.pop("img_resolution"), img_channels=kwargs.pop("img_channels"),
                      mapping_layers=num_layers, channel_base=kwargs.pop("channel_base", 32768),
                      channel_max=kwargs.pop("channel_max", 512), biline_channels=kwargs.pop("biline_channels", 32),
                      fc_clamp=kwargs.pop("fc_clamp", 256), rank=rank)
    except KeyError as exc:
        raise CheckpointError(f"the generator's init kwargs lack {exc}") from None
    if kwargs:
        raise CheckpointError(f"unsupported generator settings: {', '.join(sorted(map(str, kwargs)))}")
    return config_from_dict(values, "the generator's init kwargs")


def load_original_pickle(path) -> Generator:
    """Our Generator from an original CREPS network pickle (G_ema preferred, else G)."""
    start = time.perf_counter()
    try:
        # From memory, not the file: a damaged length field then meets the end of the data at
        # once, where reading a file would first allocate (and zero) what the field claims.
        with open(path, "rb") as f:
            raw = f.read()
        check_memo_indices(raw)
        data = RestrictedUnpickler(io.BytesIO(raw)).load()
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, struct.error,
            KeyError, RuntimeError, OverflowError, MemoryError) as exc:
        raise CheckpointError(f"{path}: not a readable CREPS pickle ({one_line(exc)})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: the pickle holds a {type(data).__name__}, not a dict of networks")
    name = next((k for k in ("G_ema", "G") if isinstance(data.get(k), ModuleRecord)), None)
    if name is None:
        raise CheckpointError(f"{path}: no 'G_ema' or 'G' network in the pickle")
    record = data[name]
    if record.class_name != "Generator":
        raise CheckpointError(f"{path}: {name} is a {record.class_name}, not a CREPS Generator")
    if record.state.get("_init_args"):
        raise CheckpointError(f"{path}: {name} was built with positional args; cannot read its config")
    state = flat_state(record)
    cfg = config_from_kwargs(record.state.get("_init_kwargs") or {}, state)
    G = generator_from_state(cfg, state, f"{path} ({name})")
    log.info("%s: loaded %s (%s) in %.2f s", path, name, cfg, time.perf_counter() - start)
    return G
