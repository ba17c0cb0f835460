"""The TensorRT build plan, without TensorRT: which graph per stage, profiles, memory.

Optimization profiles come from the runtime's own work plan (`creps.runtime.tiling`), so
an engine accepts exactly the calls the runtime makes: for every requested image size
and batch the runtime plans line chunks and pixel tiles under the memory budget, and each
profile spans the smallest to the largest extent those plans use (opt = the largest, the
extent almost every call has, since parts are near-equal). Profile minimums are 1, so
images smaller than the planned ones still run.

Profile shapes follow the stage contract (`creps.runtime.stages`): batch spans 1..N; height
and width span 1 to the longest line chunk in the lines stage and 1 to the largest tile
side in the pixels stage; every other axis is fixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from creps.errors import CrepsError
from creps.runtime.precision import stage_precision
from creps.runtime.stages import DYNAMIC, RUN_STAGES, dynamic_sizes, graph_key, input_shapes, output_shapes
from creps.runtime.tiling import Plan, PlanError, line_work_bytes, make_plan, pixel_work_bytes

ELEMENT_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
DEFAULT_WORKSPACE = 1 << 30
# GPU-sized work per call (the runtime's own defaults are tuned for CPU caches); the
# memory budget still shrinks them, and the runtime fits its calls inside the profiles.
GPU_TILE = (512, 512)
GPU_LINES = 2048
MiB = 1 << 20


class BuildPlanError(CrepsError):
    """A build request that cannot be planned (no graph for a precision, bad sizes)."""


@dataclass(frozen=True)
class ShapeRange:
    """(min, opt, max) shapes of one input."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass(frozen=True)
class StageBuild:
    """One engine: the graph it is built from and its profile."""

    stage: str
    graph: str  # manifest graph key, e.g. "pixels.fp16"
    precision: str
    profile: dict[str, ShapeRange]
    activation_bytes: int  # estimated activations of one call at the profile's max shapes
    io_bytes: int  # input + output buffers at the max shapes (float32 host/device copies)


@dataclass(frozen=True)
class BuildPlan:
    stages: list[StageBuild]
    sizes: list[tuple[int, int]]
    batch: int
    workspace: int
    max_memory: int | None
    plans: list[Plan] = field(repr=False, default_factory=list)

    def describe(self) -> list[str]:
        """The plan as text lines (what `creps-export --trt --dry-run` prints)."""
        sizes = ", ".join(f"{w}x{h}" for w, h in self.sizes)
        budget = "none" if self.max_memory is None else f"{self.max_memory / MiB:.0f} MiB"
        lines = [f"TensorRT build plan: sizes {sizes}, batch {self.batch}, memory budget {budget}, "
                 f"workspace limit {self.workspace / MiB:.0f} MiB, strongly typed network"]
        for plan in self.plans:
            tile_w, tile_h = plan.tile
            lines.append(f"  {plan.width}x{plan.height}: {len(plan.line_chunks)} line chunk(s), "
                         f"{len(plan.bands) * len(plan.columns)} tile(s) of up to {tile_w}x{tile_h}, "
                         f"runtime working memory ~{plan.estimated_bytes / MiB:.1f} MiB")
        for build in self.stages:
            lines.append(f"  {build.stage}: graph {build.graph} ({build.precision}), "
                         f"activations per call ~{build.activation_bytes / MiB:.1f} MiB, "
                         f"I/O buffers {build.io_bytes / MiB:.1f} MiB")
            for name, shapes in build.profile.items():
                lines.append(f"    {name}: min {list(shapes.min)} opt {list(shapes.opt)} max {list(shapes.max)}")
        peak = max(b.activation_bytes for b in self.stages) + sum(b.io_bytes for b in self.stages)
        lines.append(f"  device memory per image (largest stage's activations + all I/O buffers, "
                     f"weights and workspace not included): ~{peak / MiB:.1f} MiB")
        return lines

    def to_dict(self) -> dict:
        return {
            "sizes": [f"{w}x{h}" for w, h in self.sizes], "batch": self.batch, "workspace": self.workspace,
            "max_memory": self.max_memory,
            "stages": {b.stage: {"graph": b.graph, "precision": b.precision,
                                 "profile": {k: v.to_dict() for k, v in b.profile.items()},
                                 "activation_bytes": b.activation_bytes, "io_bytes": b.io_bytes}
                       for b in self.stages},
        }


def _extents(parts: list[slice]) -> list[int]:
    return [p.stop - p.start for p in parts]


def profiles(model: dict, plans: list[Plan], batch: int,
             tile: tuple[int, int] | None = None) -> dict[str, dict[str, ShapeRange]]:
    """Optimization profiles of the three stages covering every call of `plans`, and a
    whole `tile` (width, height; clipped to the largest image) when the runtime is given
    that tile: it may cut other sizes into full tiles."""
    chunk_h = [c.ys.stop - c.ys.start for p in plans for c in p.line_chunks]
    chunk_w = [c.xs.stop - c.xs.start for p in plans for c in p.line_chunks]
    tile_h = [e for p in plans for e in _extents(p.bands)]
    tile_w = [e for p in plans for e in _extents(p.columns)]
    if tile is not None:
        tile_w.append(min(tile[0], max(p.width for p in plans)))
        tile_h.append(min(tile[1], max(p.height for p in plans)))
    largest = {"mapping": {"batch": batch},
               "lines": {"batch": batch, "height": max(chunk_h), "width": max(chunk_w)},
               "pixels": {"batch": batch, "height": max(tile_h), "width": max(tile_w)}}
    smallest = dict.fromkeys(DYNAMIC, 1)

    def profile(stage: str) -> dict[str, ShapeRange]:
        low, high = input_shapes(model, stage, smallest), input_shapes(model, stage, largest[stage])
        return {name: ShapeRange(low[name], high[name], high[name]) for name in high}

    return {stage: profile(stage) for stage in RUN_STAGES}


def io_bytes(model: dict, stage: str, profile: dict[str, ShapeRange]) -> int:
    """Float32 bytes of a stage's inputs and outputs at the profile's max shapes."""
    inputs = {name: r.max for name, r in profile.items()}
    outputs = output_shapes(model, stage, inputs)
    return 4 * (sum(math.prod(s) for s in inputs.values()) + sum(math.prod(s) for s in outputs.values()))


def activation_bytes(model: dict, stage: str, profile: dict[str, ShapeRange], precision: str) -> int:
    """Estimated activations of one call at the max shapes (the runtime's estimate, rescaled
    from float32 to the precision's element size; FP32 islands make this a lower bound)."""
    scale = ELEMENT_BYTES[precision] / 4
    sizes = dynamic_sizes(stage, {name: r.max for name, r in profile.items()})
    if stage == "mapping":
        return int(4 * sizes["batch"] * 3 * max(model["z_dim"], model["w_dim"]))
    if stage == "lines":
        return int(sizes["batch"] * (sizes["height"] + sizes["width"]) * line_work_bytes(model) * scale)
    return int(sizes["batch"] * sizes["height"] * sizes["width"] * pixel_work_bytes(model) * scale)


def stage_graph(graphs: dict, stage: str, precision: str, strict: bool = True) -> tuple[str, str]:
    """(graph key, precision) for a stage (creps.runtime.precision.stage_precision: the mapping
    stays FP32). Not `strict` (a dry run before creps-calib): the key even if the graph is not there yet."""
    want = stage_precision(stage, precision)
    key = graph_key(stage, want)
    if strict and key not in graphs:
        hint = "creps-calib --fp16" if want == "fp16" else "creps-calib --int8"
        raise BuildPlanError(f"the bundle has no {key} graph for a {precision} build; make it first ({hint})")
    return key, want


def _plan(model: dict, width: int, height: int, batch: int, tile, max_memory, max_lines) -> tuple[Plan, tuple]:
    """(the runtime's plan, the tile it used); without a requested tile, GPU_TILE halved
    until it fits the budget."""
    if tile is not None:
        return make_plan(model, width, height, batch, tile, max_memory, max_lines), tile
    tile_w, tile_h = GPU_TILE
    while True:
        try:
            return make_plan(model, width, height, batch, (tile_w, tile_h), max_memory, max_lines), (tile_w, tile_h)
        except PlanError:
            if tile_w * tile_h == 1:
                raise
            tile_w, tile_h = (max(1, tile_w // 2), tile_h) if tile_w >= tile_h else (tile_w, max(1, tile_h // 2))


def build_plan(manifest: dict, precision: str = "fp32", sizes: list[tuple[int, int]] | None = None,
               batch: int = 1, max_memory: int | None = None, tile: tuple[int, int] | None = None,
               max_lines: int = GPU_LINES, workspace: int = DEFAULT_WORKSPACE, strict: bool = True) -> BuildPlan:
    """Plan one engine per stage for images of `sizes` (default: the training resolution)."""
    if precision not in ELEMENT_BYTES:
        raise BuildPlanError(f"precision {precision!r} is not one of {', '.join(ELEMENT_BYTES)}")
    if batch < 1 or workspace < 1:
        raise BuildPlanError("batch and workspace must be positive")
    model = manifest["model"]
    sizes = sizes or [(model["img_resolution"], model["img_resolution"])]
    planned = [_plan(model, w, h, batch, tile, max_memory, max_lines) for w, h in sizes]
    plans = [plan for plan, _ in planned]
    whole_tile = (max(t[0] for _, t in planned), max(t[1] for _, t in planned))
    stage_profiles = profiles(model, plans, batch, whole_tile)
    builds = []
    for stage in RUN_STAGES:
        key, stage_precision = stage_graph(manifest["graphs"], stage, precision, strict)
        profile = stage_profiles[stage]
        builds.append(StageBuild(stage, key, stage_precision, profile,
                                 activation_bytes(model, stage, profile, stage_precision),
                                 io_bytes(model, stage, profile)))
    return BuildPlan(builds, list(sizes), batch, workspace, max_memory, plans)

