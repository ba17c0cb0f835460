"""Write network pickles in the ORIGINAL CREPS format from our own model, without its code.

The format (StyleGAN3's `torch_utils/persistence.py`, version 6): a persistent module is
pickled as a call `torch_utils.persistence._reconstruct_persistent_obj(meta)` with
meta = {type: 'class', version: 6, module_src, class_name, state}, state being the
module's `__dict__` (torch's bookkeeping, `_parameters`, `_buffers`, `_modules`, the
layer's own attributes, `_init_args`, `_init_kwargs`). Plain modules (`SynthesisInput`,
`torch.nn.Sequential`) are NEWOBJ of their class plus BUILD with the `__dict__`;
`dnnlib.util.EasyDict` is NEWOBJ plus SETITEMS; numpy scalars (the layers' gains) are
`numpy.core.multiarray.scalar` under numpy 1.x, `numpy._core.multiarray.scalar` under 2.x.
Tensors pickle through torch's own reducers, exactly as in real snapshots.

The fake globals are written by name only (no fake module is ever importable), and
`Call`/`hostile_tensor` put arbitrary payloads into a pickle for the refusal tests.
"""

from __future__ import annotations

import collections
import io
import math
import pickle

import numpy as np
import torch

from creps.model import Generator

MODULE_SRC = "# training/networks_creps.py would be here; a loader must never run it\nimport os\n"
NUMPY_SCALAR = {1: "numpy.core.multiarray", 2: "numpy._core.multiarray"}


class Global:
    """A global written as module + name; callable only so that pickle accepts it in a reduce."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):
        raise RuntimeError("a fixture global is never called")


class Call:
    """Pickles as `module.name(*args)`: how payloads are injected."""

    def __init__(self, func: Global, args: tuple = ()):
        self.func, self.args = func, args


class Persistent:
    """A persistent module of the original code (its class lives in the embedded source)."""

    def __init__(self, class_name: str, state: dict, module_src: str = MODULE_SRC):
        self.class_name, self.state, self.module_src = class_name, state, module_src


class Plain:
    """A module pickled by class reference (NEWOBJ + BUILD)."""

    def __init__(self, module: str, name: str, state: dict):
        self.cls, self.state = Global(module, name), state


class EasyDict(dict):
    """Stands for dnnlib.util.EasyDict (NEWOBJ + SETITEMS)."""


class OriginalPickler(pickle._Pickler):
    """The pure-Python pickler, taught the original's globals."""

    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file, numpy_major: int = 2, protocol: int = 4):
        super().__init__(file, protocol=protocol)
        self.numpy_scalar = Global(NUMPY_SCALAR[numpy_major], "scalar")

    def reducer_override(self, obj):
        if isinstance(obj, Persistent):
            meta = dict(type="class", version=6, module_src=obj.module_src, class_name=obj.class_name, state=obj.state)
            return Global("torch_utils.persistence", "_reconstruct_persistent_obj"), (meta,)
        if isinstance(obj, Call):
            return obj.func, obj.args
        if isinstance(obj, np.generic):
            return self.numpy_scalar, (obj.dtype, obj.tobytes())
        return NotImplemented

    def save_global(self, obj, name=None):
        if not isinstance(obj, Global):
            return super().save_global(obj, name)
        if self.proto >= 4:
            self.save(obj.module)
            self.save(obj.name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    def _save_newobj(self, obj, cls, dictitems=None, state=None):
        self.save(cls)
        self.save(())
        self.write(pickle.NEWOBJ)
        self.memoize(obj)
        if dictitems:
            self._batch_setitems(iter(dictitems.items()))
        if state is not None:
            self.save(state)
            self.write(pickle.BUILD)

    dispatch[Global] = lambda self, obj: self.save_global(obj)
    dispatch[Plain] = lambda self, obj: self._save_newobj(obj, obj.cls, state=obj.state)
    dispatch[EasyDict] = lambda self, obj: self._save_newobj(obj, Global("dnnlib.util", "EasyDict"), dictitems=obj)


class _TensorCollector(OriginalPickler):
    """A first pass that only lists the tensors a pickle would hold, in order."""

    def __init__(self, numpy_major: int, protocol: int):
        super().__init__(io.BytesIO(), numpy_major, protocol)
        self.tensors = []

    def reducer_override(self, obj):
        if isinstance(obj, torch.Tensor):
            self.tensors.append(obj)
            return tuple, ()
        return super().reducer_override(obj)


def one_storage_views(obj, numpy_major: int, protocol: int) -> dict[int, Call]:
    """id(tensor) -> the call that rebuilds it as a view of one storage holding every tensor of obj."""
    collector = _TensorCollector(numpy_major, protocol)
    collector.dump(obj)
    tensors = list({id(t): t for t in collector.tensors}.values())
    flat = torch.cat([t.detach().reshape(-1).to(torch.float32) for t in tensors])
    blob = io.BytesIO()
    # A typed storage in the legacy format: what torch's own tensor reducer pickles.
    torch.save(flat._typed_storage(), blob, _use_new_zipfile_serialization=False)
    storage = Call(Global("torch.storage", "_load_from_bytes"), (blob.getvalue(),))
    views, offset = {}, 0
    for t in tensors:
        stride = tuple(int(np.prod(t.shape[i + 1:])) for i in range(t.dim()))
        view = Call(Global("torch._utils", "_rebuild_tensor_v2"),
                    (storage, offset, tuple(t.shape), stride, False, collections.OrderedDict()))
        if isinstance(t, torch.nn.Parameter):
            view = Call(Global("torch._utils", "_rebuild_parameter"), (view, t.requires_grad, collections.OrderedDict()))
        views[id(t)] = view
        offset += t.numel()
    return views


class _OneStoragePickler(OriginalPickler):
    def __init__(self, file, views: dict[int, Call], numpy_major: int, protocol: int):
        super().__init__(file, numpy_major, protocol)
        self.views = views

    def reducer_override(self, obj):
        view = self.views.get(id(obj)) if isinstance(obj, torch.Tensor) else None
        return super().reducer_override(view if view is not None else obj)


def dumps(obj, numpy_major: int = 2, protocol: int = 4, one_storage: bool = False) -> bytes:
    """The pickle of obj. With `one_storage`, every tensor is a view of one shared storage (one
    blob instead of one per tensor, as when tensors share memory): the same opcodes and
    globals as a real snapshot, read several times faster (what the fuzzer wants)."""
    buf = io.BytesIO()
    if one_storage:
        _OneStoragePickler(buf, one_storage_views(obj, numpy_major, protocol), numpy_major, protocol).dump(obj)
    else:
        OriginalPickler(buf, numpy_major, protocol).dump(obj)
    return buf.getvalue()


def hostile_tensor(payload, shape=(4,)) -> Call:
    """A tensor whose storage blob (what torch.storage._load_from_bytes gets) is `payload` pickled
    with protocol 2, as torch's legacy storage format writes its pickles."""
    blob = Call(Global("torch.storage", "_load_from_bytes"), (dumps(payload, protocol=2),))
    stride = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))
    return Call(Global("torch._utils", "_rebuild_tensor_v2"),
                (blob, 0, tuple(shape), stride, False, collections.OrderedDict()))


def payloads(marker) -> dict[str, Call]:
    """Calls that, if a loader ever ran them, would create the file `marker` (or fail trying)."""
    m = str(marker)
    return {
        "os.system": Call(Global("os", "system"), (f"touch {m}",)),
        "posix.system": Call(Global("posix", "system"), (f"touch {m}",)),
        "builtins.eval": Call(Global("builtins", "eval"), (f"open({m!r}, 'w').close()",)),
        "builtins.exec": Call(Global("builtins", "exec"), (f"open({m!r}, 'w').close()",)),
        "subprocess.Popen": Call(Global("subprocess", "Popen"), (["touch", m],)),
        "subprocess.check_output": Call(Global("subprocess", "check_output"), (["touch", m],)),
        "training.networks_creps.Backdoor": Call(Global("training.networks_creps", "Backdoor"), ()),
        "builtins.open": Call(Global("builtins", "open"), (m, "w")),
        "torch.load": Call(Global("torch", "load"), (m,)),
    }


# ---- our model -> the original's module tree --------------------------------------------


def _param(t):
    return torch.nn.Parameter(t.detach().clone(), requires_grad=False)


def _module_dict(params=(), buffers=(), modules=(), **attrs):
    """A torch.nn.Module __dict__ as torch 1.x/2.x has it, plus the layer's attributes."""
    hooks = ("_backward_pre_hooks", "_backward_hooks", "_forward_hooks", "_forward_hooks_with_kwargs",
             "_forward_hooks_always_called", "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs",
             "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
             "_load_state_dict_post_hooks")
    state = dict(training=False, _parameters=collections.OrderedDict((k, _param(v)) for k, v in params),
                 _buffers=collections.OrderedDict((k, v.detach().clone()) for k, v in buffers),
                 _non_persistent_buffers_set=set(), _is_full_backward_hook=None,
                 _modules=collections.OrderedDict(modules))
    state.update({h: collections.OrderedDict() for h in hooks})
    state.update(attrs)
    return state


def _persistent(class_name, args, kwargs, params=(), buffers=(), modules=(), **attrs):
    return Persistent(class_name, _module_dict(params, buffers, modules, _init_args=tuple(args),
                                               _init_kwargs=dict(kwargs), **attrs))


def _fc(layer, activation="linear", lr_multiplier=1, bias_init=0):
    out_f, in_f = layer.weight.shape
    kwargs = {k: v for k, v in dict(activation=activation, lr_multiplier=lr_multiplier, bias_init=bias_init).items()
              if v != {"activation": "linear", "lr_multiplier": 1, "bias_init": 0}[k]}
    return _persistent("FullyConnectedLayer", (in_f, out_f), kwargs,
                       params=[("weight", layer.weight), ("bias", layer.bias)],
                       in_features=in_f, out_features=out_f, activation=activation,
                       weight_gain=np.float64(lr_multiplier / np.sqrt(in_f)), bias_gain=lr_multiplier)


def _modulated(layer, w_dim, fc_clamp):
    out_c, in_c = layer.weight.shape
    common = dict(params=[("weight", layer.weight), ("bias", layer.bias)],
                  modules=[("affine", _fc(layer.affine, bias_init=1))],
                  in_channels=in_c, out_channels=out_c, w_dim=w_dim, fc_clamp=fc_clamp)
    kwargs = dict(w_dim=w_dim, fc_clamp=fc_clamp, channels_last=False)
    if layer.tores:
        return _persistent("ToResLayer", (in_c, out_c), kwargs, weight_gain=np.float64(1 / np.sqrt(in_c)), **common)
    return _persistent("SynthesisLayer", (in_c, out_c), kwargs, activation="lrelu",
                       act_gain=np.float64(np.sqrt(2)), **common)


def _input(inp, w_dim, resolution):
    state = _module_dict(params=[("weight", inp.weight)], buffers=[("freqs", inp.freqs), ("coords", inp.coords)],
                         modules=[("affine", _fc(inp.affine, bias_init=1))], channels=inp.channels, w_dim=w_dim,
                         resolution=resolution, rank=inp.rank, bandwidth=10)
    return Plain("training.networks_creps", "SynthesisInput", state)


def _block(block, in_channels, out_channels, cfg, res_channels, is_last, use_fp16, fc_clamp):
    modules = []
    if in_channels == 1:
        modules.append(("input", _input(block.input, cfg.w_dim, cfg.img_resolution)))
    else:
        modules.append(("fc0", _modulated(block.fc0, cfg.w_dim, fc_clamp)))
    modules.append(("fc1", _modulated(block.fc1, cfg.w_dim, fc_clamp)))
    modules.append(("tores", _modulated(block.tores, cfg.w_dim, fc_clamp)))
    kwargs = dict(w_dim=cfg.w_dim, resolution=cfg.img_resolution, res_channels=res_channels, is_last=is_last,
                  use_fp16=use_fp16)
    return _persistent("SynthesisBlock", (in_channels, out_channels), kwargs, modules=modules,
                       in_channels=in_channels, w_dim=cfg.w_dim, resolution=cfg.img_resolution,
                       res_channels=res_channels, is_last=is_last,
                       architecture="orig" if in_channels == 1 else "skip", use_fp16=use_fp16,
                       channels_last=False, num_fc=1 if in_channels == 1 else 2, num_tores=1)


def _sequential(decoder):
    modules = [(str(i), _fc(layer, activation="lrelu")) for i, layer in enumerate(decoder)]
    return Plain("torch.nn.modules.container", "Sequential", _module_dict(modules=modules))


def original_generator(G: Generator, **extra_kwargs) -> Persistent:
    """Our generator as the original's `Generator` record (extra_kwargs go into its init kwargs)."""
    cfg, syn = G.cfg, G.synthesis
    num_fp16_res = 4
    fp16_res = max(2 ** (int(math.log2(cfg.img_resolution)) + 1 - num_fp16_res), 8)
    blocks, prev = [], 1
    for res in cfg.block_resolutions:
        c = cfg.channels(res)
        blocks.append((f"b{res}", _block(getattr(syn, f"b{res}"), prev, c, cfg, cfg.biline_channels,
                                         res == cfg.img_resolution, res >= fp16_res, cfg.fc_clamp)))
        prev = c
    decoders = [(f"decoder_{res}", _sequential(getattr(syn, f"decoder_{res}")))
                for res in cfg.entangled_resolutions]
    c = cfg.biline_channels
    outputs = [("block0", _block(syn.block0, c, 4 * c, cfg, cfg.img_channels, False, True, 256)),
               ("block1", _block(syn.block1, 4 * c, 2 * c, cfg, cfg.img_channels, True, True, 256))]
    synthesis_kwargs = dict(channel_base=cfg.channel_base, channel_max=cfg.channel_max, num_fp16_res=num_fp16_res,
                            conv_clamp=256)
    if cfg.biline_channels != 32:
        synthesis_kwargs["biline_channels"] = cfg.biline_channels
    if cfg.fc_clamp != 256:
        synthesis_kwargs["fc_clamp"] = cfg.fc_clamp
    synthesis = _persistent(
        "SynthesisNetwork", (), dict(w_dim=cfg.w_dim, img_resolution=cfg.img_resolution,
                                     img_channels=cfg.img_channels, **synthesis_kwargs),
        modules=blocks + decoders + [("decoder_last", _sequential(syn.decoder_last)),
                                     ("decoder_img", _fc(syn.decoder_img))] + outputs,
        w_dim=cfg.w_dim, img_resolution=cfg.img_resolution, img_resolution_log2=int(math.log2(cfg.img_resolution)),
        img_channels=cfg.img_channels, biline_channels=cfg.biline_channels, num_fp16_res=num_fp16_res,
        block_resolutions=cfg.block_resolutions, num_ws=cfg.num_ws)
    mapping_fcs = [(f"fc{i}", _fc(getattr(G.mapping, f"fc{i}"), activation="lrelu", lr_multiplier=0.01))
                   for i in range(cfg.mapping_layers)]
    mapping = _persistent(
        "MappingNetwork", (), dict(z_dim=cfg.z_dim, c_dim=0, w_dim=cfg.w_dim, num_ws=cfg.num_ws,
                                   num_layers=cfg.mapping_layers),
        buffers=[("w_avg", G.mapping.w_avg)], modules=mapping_fcs, z_dim=cfg.z_dim, c_dim=0, w_dim=cfg.w_dim,
        num_ws=cfg.num_ws, num_layers=cfg.mapping_layers, w_avg_beta=0.998)
    kwargs = dict(z_dim=cfg.z_dim, w_dim=cfg.w_dim, mapping_kwargs=EasyDict(num_layers=cfg.mapping_layers),
                  **synthesis_kwargs, c_dim=0, img_resolution=cfg.img_resolution, img_channels=cfg.img_channels)
    kwargs.update(extra_kwargs)
    return _persistent("Generator", (), kwargs, modules=[("synthesis", synthesis), ("mapping", mapping)],
                       z_dim=cfg.z_dim, c_dim=kwargs["c_dim"], w_dim=cfg.w_dim, img_resolution=cfg.img_resolution,
                       img_channels=cfg.img_channels, num_ws=cfg.num_ws)


def discriminator(seed: int = 0) -> Persistent:
    gen = torch.Generator().manual_seed(seed)
    return _persistent("Discriminator", (), dict(c_dim=0, img_resolution=16, img_channels=3),
                       params=[("b16.fromrgb.weight", torch.randn(8, 3, 1, 1, generator=gen))],
                       c_dim=0, img_resolution=16, img_channels=3)


def snapshot(G_ema: Generator, G: Generator | None = None, **extra) -> dict:
    """The dict a training snapshot holds: G, D, G_ema, augment_pipe, training_set_kwargs."""
    data = dict(G=original_generator(G if G is not None else G_ema), D=discriminator(),
                G_ema=original_generator(G_ema), augment_pipe=None,
                training_set_kwargs=EasyDict(class_name="training.dataset.ImageFolderDataset", path="ffhq.zip",
                                             use_labels=False, max_size=70000, xflip=True, resolution=256))
    data.update(extra)
    return data


def write_pickle(path, data, numpy_major: int = 2) -> None:
    with open(path, "wb") as f:
        OriginalPickler(f, numpy_major).dump(data)
