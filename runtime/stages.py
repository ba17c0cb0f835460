"""The stage contract (DESIGN's stage table), stated once: each stage graph's inputs and
outputs in call order, and each tensor's axes and dtype.

An axis is one of:
- a model field name (`z_dim`, `num_ws`, ...): fixed, its size is manifest["model"][field];
- an int: fixed at that size (psi's [1]);
- a dynamic axis name, one of DYNAMIC: `batch` (images per call), `height` (rows: ys, or
  the cols of a tile), `width` (columns: xs, or the rows of a tile).

A stage's output shape follows from its axes: model fields from the model section, each
dynamic axis from the inputs of the same call that carry that name (batch from z or ws,
height from ys or cols, width from xs or rows). The exporter names the graphs' dynamic
axes from this table, the bundle reader checks every graph's recorded IO against it, the
TensorRT planner builds its profiles from it, and the manifest records it as its "stages"
section (`to_manifest`) for runtimes in other languages. Standard library only, like the
bundle format beside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

DYNAMIC = ("batch", "height", "width")
IO_DTYPE = "float32"  # every backend feeds and returns float32 host arrays


@dataclass(frozen=True)
class Tensor:
    name: str
    axes: tuple[str | int, ...]
    dtype: str = IO_DTYPE

    def to_manifest(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "axes": list(self.axes)}


@dataclass(frozen=True)
class Stage:
    name: str
    inputs: tuple[Tensor, ...]  # in call order
    outputs: tuple[Tensor, ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)


Z = Tensor("z", ("batch", "z_dim"))
PSI = Tensor("psi", (1,))
WS = Tensor("ws", ("batch", "num_ws", "w_dim"))
YS = Tensor("ys", ("height",))
XS = Tensor("xs", ("width",))
COLS = Tensor("cols", ("batch", "num_blocks", "biline_channels", "height", "rank"))
ROWS = Tensor("rows", ("batch", "num_blocks", "biline_channels", "width", "rank"))
IMG = Tensor("img", ("batch", "img_channels", "height", "width"))

CONTRACT = {stage.name: stage for stage in (
    Stage("mapping", (Z, PSI), (WS,)),
    Stage("lines", (WS, YS, XS), (COLS, ROWS)),
    Stage("pixels", (WS, COLS, ROWS), (IMG,)),
    Stage("generator", (Z, PSI, YS, XS), (IMG,)),  # the fused graph, optional in a bundle
)}
STAGES = tuple(CONTRACT)
RUN_STAGES = ("mapping", "lines", "pixels")  # what the runtime runs, in this order


def graph_key(stage: str, precision: str = "fp32") -> str:
    """A graph's key in the manifest: `lines` for FP32, `lines.fp16` otherwise."""
    return stage if precision == "fp32" else f"{stage}.{precision}"


def dynamic_axes(stage: str) -> dict[str, dict[int, str]]:
    """{input name: {axis index: dynamic axis name}} for the inputs with a dynamic axis."""
    axes = {t.name: {i: a for i, a in enumerate(t.axes) if a in DYNAMIC} for t in CONTRACT[stage].inputs}
    return {name: dims for name, dims in axes.items() if dims}


def carriers(stage: str, axis: str) -> list[tuple[str, int]]:
    """(input name, axis index) of every input of `stage` that carries the dynamic `axis`."""
    return [(name, i) for name, dims in dynamic_axes(stage).items() for i, a in dims.items() if a == axis]


def spatial_inputs(stage: str) -> set[str]:
    """The inputs that carry a height or width axis (ys/xs, cols/rows): what varies per pixel."""
    return {name for name, dims in dynamic_axes(stage).items() if {"height", "width"} & set(dims.values())}


def resolve(model: dict, tensor: Tensor, sizes: dict[str, int]) -> tuple[int, ...]:
    """The shape of `tensor` with the model's fixed sizes and `sizes` of the dynamic axes."""
    return tuple(a if isinstance(a, int) else sizes[a] if a in DYNAMIC else model[a] for a in tensor.axes)


def input_shapes(model: dict, stage: str, sizes: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """Every input's shape of `stage` for the dynamic axes' `sizes` ({"batch": 2, ...})."""
    return {t.name: resolve(model, t, sizes) for t in CONTRACT[stage].inputs}


def dynamic_sizes(stage: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """The size of each dynamic axis in a call of `stage` with input `shapes`; ValueError
    when two inputs that carry one axis disagree (a call no graph accepts)."""
    sizes = {}
    for axis in DYNAMIC:
        found = [(name, shapes[name][i]) for name, i in carriers(stage, axis)]
        for name, size in found[1:]:
            if size != found[0][1]:
                raise ValueError(f"{stage}: {name} has {axis} {size}, {found[0][0]} has {axis} {found[0][1]}")
        if found:
            sizes[axis] = found[0][1]
    return sizes


def output_shapes(model: dict, stage: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Every output's shape of `stage` for input `shapes` ({name: shape})."""
    sizes = dynamic_sizes(stage, shapes)
    return {t.name: resolve(model, t, sizes) for t in CONTRACT[stage].outputs}


def to_manifest() -> dict:
    """The manifest's "stages" section: lists in call order (a JSON library may sort object keys)."""
    return {stage.name: {"inputs": [t.to_manifest() for t in stage.inputs],
                         "outputs": [t.to_manifest() for t in stage.outputs]}
            for stage in CONTRACT.values()}


def difference(recorded) -> str | None:
    """Where a recorded "stages" section first differs from this contract (None: it does not)."""
    return _difference(recorded, to_manifest(), "stages")


def _difference(recorded, want, where: str) -> str | None:
    if isinstance(want, dict):
        if not isinstance(recorded, dict):
            return f"{where} is {_text(recorded)}, not an object"
        for key in [*want, *recorded]:
            if key not in recorded or key not in want:
                return f"{where} {'lacks' if key in want else 'has an unknown'} {_text(key)}"
            found = _difference(recorded[key], want[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(want, list):
        if not isinstance(recorded, list):
            return f"{where} is {_text(recorded)}, not a list"
        if len(recorded) != len(want):
            return f"{where} has {len(recorded)} entries, this creps has {len(want)}"
        for i, (got, expected) in enumerate(zip(recorded, want)):
            found = _difference(got, expected, f"{where}[{i}]")
            if found:
                return found
        return None
    if type(recorded) is not type(want) or recorded != want:  # type(): JSON 1.0 and true are no size 1
        return f"{where} is {_text(recorded)}, this creps has {_text(want)}"
    return None


def _text(value) -> str:
    return json.dumps(value)[:80]
