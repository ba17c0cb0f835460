"""`TileRenderer`: one Deep Zoom tile of a seed and psi, rendered natively by the runtime.

A tile is what `Runtime.generate(seed, size, psi, window)` paints for the tile's window
(`Canvas.window`), bit for bit: the same coordinates (`grid.coords` of that window), the
same ws (the runtime's mapping), the runtime's own lines and pixels stage runs and the
same pixel tiles (the runtime's plan for the tile's size). What differs is what is kept:

- ws per (seed, psi);
- the line features of a tile row's ys and of a tile column's xs at a level, in a
  `LineCache` bounded in bytes, keyed (seed, psi, level, "ys", row) and (seed, psi, level,
  "xs", col): a screen of k x k tiles costs 2k line evaluations, not 2k² (the lines stage
  is pointwise along a line, so features computed for one tile are those of its neighbours);
- nothing of the tile itself (HTTP caches do that, by ETag), but the same tile asked for
  twice at once is rendered once.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import threading
from dataclasses import dataclass

import numpy as np

from creps import grid
from creps.errors import CrepsError
from creps.runtime.generate import Batch, Runtime
from creps.runtime.png import PngStream
from creps.serve.lines import LineCache
from creps.serve.pyramid import Canvas

log = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 512 << 20
WS_CACHE_BYTES = 16 << 20  # ws of many thousand (seed, psi): num_ws * w_dim floats each
MAX_SEED = 2**32 - 1
MAX_PSI = 2.0


class TileNotFound(CrepsError):
    """A tile the pyramid does not have: a level past it, a column or row outside the level (HTTP 404)."""


class BadTileRequest(CrepsError):
    """A tile request that makes no image: a seed outside 0..2**32-1, psi not finite or outside [-2, 2] (HTTP 400)."""


@dataclass(frozen=True)
class TileKey:
    """One tile of one pyramid: the seed's image at truncation psi, tile (col, row) of `level`."""

    seed: int
    psi: float
    level: int
    col: int
    row: int


@dataclass(frozen=True)
class Tile:
    """A rendered tile: its window and (width, height) as given to the runtime, the PNG, its strong ETag."""

    key: TileKey
    window: grid.Window
    size: tuple[int, int]
    png: bytes
    etag: str


def png_bytes(pixels: np.ndarray) -> bytes:
    """An RGB image (H, W, 3) uint8 as PNG bytes (the runtime's own PNG writer)."""
    buffer = io.BytesIO()
    stream = PngStream(buffer, pixels.shape[1], pixels.shape[0])
    stream.write(pixels)
    stream.close()
    return buffer.getvalue()


def is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def canonical(key: TileKey) -> TileKey:
    """A checked key as plain Python numbers (numpy scalars, psi -0.0 as 0.0): one cache
    entry and one ETag per tile."""
    return TileKey(int(key.seed), float(key.psi) + 0.0, int(key.level), int(key.col), int(key.row))


class TileRenderer:
    """Tiles of `canvas` from `runtime`, line features cached in `cache_bytes`; thread-safe."""

    def __init__(self, runtime: Runtime, canvas: Canvas, cache_bytes: int = DEFAULT_CACHE_BYTES):
        if canvas.resolution != runtime.model["img_resolution"]:
            raise CrepsError(f"a canvas for a {canvas.resolution}-pixel model on a bundle trained at "
                             f"{runtime.model['img_resolution']}")
        self.runtime = runtime
        self.canvas = canvas
        self.lines = LineCache(cache_bytes)
        self.ws_cache = LineCache(WS_CACHE_BYTES)
        self.in_flight = LineCache(0, size=lambda tile: len(tile.png))  # coalesces, stores nothing
        self.lock = threading.Lock()
        self.tiles_rendered = 0
        # What a tile's bytes depend on besides its key: the bundle (its manifest records
        # every graph's and engine's sha256), the backend and precision it runs, the canvas.
        self.identity = json.dumps({
            "manifest": hashlib.sha256(json.dumps(runtime.bundle.manifest, sort_keys=True).encode()).hexdigest(),
            "backend": runtime.backend_name, "precision": runtime.precision,
            "canvas": [canvas.resolution, canvas.views, canvas.detail, canvas.tile_size, canvas.overlap],
        }, sort_keys=True)
        # The other side of a one-sided lines call only fills the call's shape: the fewest
        # lines the backend takes (and, as runtime.plan also plans its pixel tiles, the
        # narrowest tile), discarded.
        limits = runtime.limits
        self.pad = {"xs": max(1, limits.line_width[0], limits.tile_width[0]),
                    "ys": max(1, limits.line_height[0], limits.tile_height[0])}

    def check(self, key: TileKey) -> None:
        """Refuse a key: BadTileRequest (seed, psi) or TileNotFound (level, col, row)."""
        if not is_int(key.seed) or not 0 <= key.seed <= MAX_SEED:
            raise BadTileRequest(f"seed {key.seed!r} is outside 0..{MAX_SEED}")
        if not isinstance(key.psi, (int, float, np.integer, np.floating)) or isinstance(key.psi, bool) \
                or not math.isfinite(key.psi) or not -MAX_PSI <= key.psi <= MAX_PSI:
            raise BadTileRequest(f"psi {key.psi!r} is not a finite number in [-{MAX_PSI:g}, {MAX_PSI:g}]")
        if not all(is_int(v) for v in (key.level, key.col, key.row)):
            raise TileNotFound(f"level {key.level!r}, tile {key.col!r}_{key.row!r}: not whole numbers")
        if not 0 <= key.level <= self.canvas.max_level:
            raise TileNotFound(f"level {key.level} is outside the pyramid's levels 0..{self.canvas.max_level}")
        if not self.canvas.has_tile(key.level, key.col, key.row):
            cols, rows = self.canvas.tile_counts(key.level)
            raise TileNotFound(f"tile {key.col}_{key.row} is outside level {key.level}'s {cols}x{rows} tiles")

    def etag(self, key: TileKey) -> str:
        """The tile's strong ETag, quoted as the header carries it; computed without rendering."""
        key = canonical(key)
        text = json.dumps([self.identity, key.seed, repr(key.psi), key.level, key.col, key.row])
        return f'"{hashlib.sha256(text.encode()).hexdigest()[:32]}"'

    def descriptor(self) -> str:
        """The DZI XML, the same for every seed and psi."""
        return self.canvas.descriptor()

    def render(self, key: TileKey) -> Tile:
        """The tile of `key` (checked first); the same tile in flight in another thread is waited for."""
        self.check(key)
        key = canonical(key)
        return self.in_flight.get(key, lambda: self._render(key))

    def _render(self, key: TileKey) -> Tile:
        window, size = self.canvas.window(key.level, key.col, key.row)
        ys, xs = grid.coords(*size, window=window)  # (h,), (w,): what Runtime.generate feeds for this window
        ws = self.ws_cache.get((key.seed, key.psi), lambda: self.runtime.mapping(self.runtime.z(key.seed), key.psi))
        cols = self.lines.get((key.seed, key.psi, key.level, "ys", key.row), lambda: self.line_features(ws, "ys", ys))
        rows = self.lines.get((key.seed, key.psi, key.level, "xs", key.col), lambda: self.line_features(ws, "xs", xs))
        pixels = np.empty((size[1], size[0], 3), np.uint8)  # (h, w, 3)
        batch = Batch([f"seed {key.seed} (psi {key.psi:g}, level {key.level}, tile {key.col}_{key.row})"], ws=ws)
        for band, column, img in self.runtime.pixels(batch, ws, cols, rows, self.runtime.plan(size)):
            pixels[band, column] = grid.to_uint8(img[0])
        with self.lock:
            self.tiles_rendered += 1
        return Tile(key, window, size, png_bytes(pixels), self.etag(key))

    def line_features(self, ws: np.ndarray, side: str, values: np.ndarray) -> np.ndarray:
        """The lines stage for one side only: cols (1, B, 32, h, R) of ys, or rows (1, B, 32, w, R) of xs."""
        other = np.zeros(self.pad["xs" if side == "ys" else "ys"], np.float32)
        ys, xs = (values, other) if side == "ys" else (other, values)
        cols, rows = self.runtime.lines(ws, ys, xs, self.runtime.plan((len(xs), len(ys))))
        return cols if side == "ys" else rows

    def stats(self) -> dict:
        """The line cache's stats (hits, misses, coalesced, evictions, bytes, entries), tiles
        rendered, and tile requests that waited on the same tile in flight."""
        with self.lock:
            rendered = self.tiles_rendered
        return {**self.lines.stats(), "tiles_rendered": rendered, "tiles_coalesced": self.in_flight.stats()["coalesced"]}
