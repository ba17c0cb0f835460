"""The work plan of one image: batch, line chunks and pixel tiles, sized from a memory budget.

The line stage is pointwise along a line and the pixel stage pointwise per pixel, so any
split gives the same numbers as the whole image; the plan only trades speed against
memory. Parts are near-equal (sizes differ by at most one) so a backend sees few shapes.

`max_memory` bounds the runtime's working memory: the line features of the whole image
(kept for the pixel stage: B·32·R floats per line per image) plus, for each concurrent
call, the larger of one line chunk's and one pixel tile's activations, estimated from
the model's widths below. Weights, the output image (or the band being streamed) and the
libraries' own overhead come on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from creps.errors import CrepsError

FLOAT = 4
# Fastest per call on a 2-core AVX-512 CPU with ONNX Runtime, one thread per call (CPU time
# of the published config's graphs): 8192-pixel tiles keep a tile's activations near the
# core's caches (2-4 times larger or smaller tiles ran 5-20% slower), 256-line chunks give
# the line GEMMs enough rows (512 lines ran 10% slower). benchmarks/runtime_tiles.py
# re-measures whole images per tile and chunk. Both are per call, so a batch of N images
# shares them (a tile of 1/N the pixels, 1/N the lines): N times larger calls spill the
# caches and N times the activations sit in ONNX Runtime's arenas (benchmarks/batch.py).
DEFAULT_TILE = (128, 64)
DEFAULT_LINES = 256
UNLIMITED = (1, 1 << 62)


class PlanError(CrepsError):
    """A size, tile or memory budget that cannot be planned (too small, outside a backend's range)."""


@dataclass(frozen=True)
class Limits:
    """Inclusive (min, max) extents a backend accepts (TensorRT profiles); unlimited by default."""

    batch: tuple[int, int] = UNLIMITED
    line_height: tuple[int, int] = UNLIMITED  # ys per lines call
    line_width: tuple[int, int] = UNLIMITED  # xs per lines call
    tile_height: tuple[int, int] = UNLIMITED  # pixel rows per pixels call
    tile_width: tuple[int, int] = UNLIMITED

    # A backend with bounded shapes (TensorRT engines) was built for its profile's largest
    # tile and line chunk at any batch of the profile, sized to a memory budget at build
    # time: those are its defaults.
    def default_tile(self, batch: int = 1) -> tuple[int, int]:
        """(width, height): the profile's largest tile when bounded, else DEFAULT_TILE shared by the batch."""
        if UNLIMITED not in (self.tile_width, self.tile_height):
            return self.tile_width[1], self.tile_height[1]
        return shrink(DEFAULT_TILE, DEFAULT_TILE[0] * DEFAULT_TILE[1] // batch)

    def default_lines(self, batch: int = 1) -> int:
        """Lines per lines call: the profile's largest chunk when bounded, else DEFAULT_LINES shared by the batch."""
        if UNLIMITED not in (self.line_height, self.line_width):
            return self.line_height[1] + self.line_width[1]
        return max(2, DEFAULT_LINES // batch)


@dataclass(frozen=True)
class LineChunk:
    """One lines call: slices of ys and xs; a side marked `pad` only fills the call's shape."""

    ys: slice
    xs: slice
    pad_ys: bool = False
    pad_xs: bool = False


@dataclass(frozen=True)
class Plan:
    """What one image of `batch` samples runs as."""

    width: int
    height: int
    batch: int
    line_chunks: list[LineChunk]
    bands: list[slice]  # row ranges, in output order
    columns: list[slice]  # column ranges within a band
    estimated_bytes: int = field(default=0)

    @property
    def tile(self) -> tuple[int, int]:
        """The largest tile, (width, height)."""
        return max(s.stop - s.start for s in self.columns), max(s.stop - s.start for s in self.bands)

    def tiles(self):
        """(rows, cols) slices of every tile, band by band, left to right."""
        for band in self.bands:
            for column in self.columns:
                yield band, column


def shrink(tile: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """`tile` (width, height) scaled down, keeping its shape, to at most `max_pixels` (each side at least 1)."""
    tile_w, tile_h = tile
    if tile_w * tile_h <= max_pixels:
        return tile
    scale = math.sqrt(max_pixels / (tile_w * tile_h))
    return max(1, int(tile_w * scale)), max(1, int(tile_h * scale))


def split(n: int, parts: int) -> list[slice]:
    """[0, n) in `parts` contiguous near-equal slices."""
    bounds = [n * i // parts for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def split_at_most(n: int, longest: int) -> list[slice]:
    return split(n, math.ceil(n / longest))


def line_feature_bytes(model: dict) -> int:
    """Bytes of line features (cols or rows) per line per image."""
    return FLOAT * model["num_blocks"] * model["biline_channels"] * model["rank"]


def line_work_bytes(model: dict) -> int:
    """Activation bytes per line per image in the line stage: a layer's input, output and a
    temporary at the widest width, plus the skip sums and the stacked outputs."""
    widest = min(model.get("channel_base", 1 << 30) // 4, model.get("channel_max", 1024))
    return FLOAT * model["rank"] * (3 * widest + 2 * model["num_blocks"] * model["biline_channels"])


def pixel_work_bytes(model: dict) -> int:
    """Activation bytes per pixel per image in the pixel stage: all entangled features of
    the tile, three tensors at the widest decoder width (4·32), the image."""
    c = model["biline_channels"]
    return FLOAT * (model["num_blocks"] * c + 3 * 4 * c + 2 * model["img_channels"])


def check_range(name: str, value: int, limits: tuple[int, int]) -> None:
    lo, hi = limits
    if not lo <= value <= hi:
        raise PlanError(
            f"{name} {value} is outside the backend's range {lo}..{hi} "
            "(rebuild the engines with a wider profile, or change the size, tile or batch)"
        )


def pick_tile(width, height, batch, model, tile, budget, limits: Limits) -> tuple[int, int]:
    """(tile width, tile height): the requested or default tile, shrunk to the budget."""
    tile_w, tile_h = tile or limits.default_tile(batch)
    tile_w, tile_h = min(tile_w, width), min(tile_h, height)
    max_pixels = budget // (batch * pixel_work_bytes(model))
    if tile_w * tile_h > max_pixels:
        if tile is not None:
            raise PlanError(f"tile {tile_w}x{tile_h} needs more than the memory budget; use a smaller --tile")
        tile_w, tile_h = shrink((tile_w, tile_h), max_pixels)
    if tile is not None:  # a requested tile must fit the backend; the default one shrinks to it
        check_range("tile width", tile_w, limits.tile_width)
        check_range("tile height", tile_h, limits.tile_height)
    return min(tile_w, limits.tile_width[1]), min(tile_h, limits.tile_height[1])


def longest_part(n: int, parts: int) -> int:
    """The longest slice of split(n, min(parts, n))."""
    return math.ceil(n / min(parts, n))


def plan_lines(width, height, max_lines, limits: Limits, workers: int = 1) -> list[LineChunk]:
    """Chunks of ys and xs, each call at most `max_lines` lines, both sides non-empty
    (a side that has run out repeats its first lines as padding, discarded after); the
    number of calls a multiple of `workers` where the lines allow it."""
    calls = max(math.ceil((height + width) / max_lines), math.ceil(height / limits.line_height[1]),
                math.ceil(width / limits.line_width[1]))
    while longest_part(height, calls) + longest_part(width, calls) > max_lines:
        calls += 1
    calls = max(calls, min(math.ceil(calls / workers) * workers, max(height, width)))
    chunks = []
    ys_parts, xs_parts = split(height, min(calls, height)), split(width, min(calls, width))
    pad_ys = slice(0, min(height, max(1, limits.line_height[0])))
    pad_xs = slice(0, min(width, max(1, limits.line_width[0])))
    for i in range(calls):
        ys, xs = (ys_parts[i] if i < len(ys_parts) else None), (xs_parts[i] if i < len(xs_parts) else None)
        chunks.append(LineChunk(ys or pad_ys, xs or pad_xs, ys is None, xs is None))
    for chunk in chunks:
        check_range("line chunk height", chunk.ys.stop - chunk.ys.start, limits.line_height)
        check_range("line chunk width", chunk.xs.stop - chunk.xs.start, limits.line_width)
    return chunks


def make_plan(model: dict, width: int, height: int, batch: int = 1, tile: tuple[int, int] | None = None,
              max_memory: int | None = None, max_lines: int | None = None, limits: Limits = Limits(),
              workers: int = 1) -> Plan:
    """Plan one image of `batch` samples for `workers` concurrent calls. `tile` is (width,
    height) and `max_lines` lines per lines call (both defaults: the fastest measured, shrunk
    to the budget; given ones are kept as they are); `max_memory` in bytes."""
    check_range("batch", batch, limits.batch)
    if tile is not None and min(tile) < 1:
        raise PlanError(f"tile {tile[0]}x{tile[1]}: both sides must be at least 1")
    features = batch * (height + width) * line_feature_bytes(model)
    line_bytes = batch * line_work_bytes(model)
    smallest = max(line_bytes * 2, batch * pixel_work_bytes(model))
    budget = 1 << 62 if max_memory is None else (max_memory - features) // workers  # per concurrent call
    if budget < smallest:
        need = features + workers * smallest
        raise PlanError(
            f"memory budget {max_memory} bytes is below the {need} bytes a {width}x{height} image "
            f"of batch {batch} needs at least (its line features alone take {features})"
        )
    lines = max(2, min(max_lines or limits.default_lines(batch), budget // line_bytes))
    chunks = plan_lines(width, height, lines, limits, 1 if max_lines else workers)
    tile_w, tile_h = pick_tile(width, height, batch, model, tile, budget, limits)
    bands, columns = split_at_most(height, tile_h), split_at_most(width, tile_w)
    if tile is None and len(bands) * len(columns) < workers:  # keep every worker busy on small images
        columns = split(width, min(width, math.ceil(workers / len(bands))))
    for part in bands:
        check_range("tile height", part.stop - part.start, limits.tile_height)
    for part in columns:
        check_range("tile width", part.stop - part.start, limits.tile_width)
    longest_call = max((c.ys.stop - c.ys.start) + (c.xs.stop - c.xs.start) for c in chunks)
    work = max(longest_call * line_bytes, tile_w * tile_h * batch * pixel_work_bytes(model))
    return Plan(width, height, batch, chunks, bands, columns, estimated_bytes=features + workers * work)
