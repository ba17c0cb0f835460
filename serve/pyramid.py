"""The canvas: a Deep Zoom pyramid over the generator's plane, every level drawn natively.

Geometry (docs/serve.md). The deepest level has pixel spacing `step = 2**-p`, the largest
power of two at most 1 / (detail * (R - 1)) for a model trained at R x R: `detail` times
the trained pixel density. It spans `views` trained views across on both axes, centred on
the trained view's centre 0.5: `views / step` pixels a side, pixel (0, 0) centred at
x0 = y0 = 0.5 - views / 2. Level l of 0..L (L = ceil(log2(side))) is the deepest one
shrunk 2**k times (k = L - l), ceil(side / 2**k) pixels; its pixel i sits at the centre
of the deepest pixels it covers, x0 + step * ((i + 0.5) * 2**k - 0.5). Every coordinate is
a multiple of step / 2, a power of two, by an integer below 2**22 (a side is at most
grid.MAX_SIDE = 2**20 pixels), so it is exact in float32 and float64, and
`linspace` of a tile's first and last centres gives the same grid as the whole level: two
adjacent tiles continue one grid, whatever size each is.

Tiles follow Deep Zoom: TileSize 256, Overlap 1 (tile (col, row) covers level pixels
[col * 256 - 1, (col + 1) * 256 + 1), clipped to the level), Format png.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from creps import grid
from creps.errors import CrepsError

DEFAULT_VIEWS = 16
DEFAULT_DETAIL = 4.0
MIN_DETAIL, MAX_DETAIL = 1, 64  # at least the trained density (a step of at most 1 / (R - 1))
TILE_SIZE = 256
OVERLAP = 1
FORMAT = "png"
DZI_NAMESPACE = "http://schemas.microsoft.com/deepzoom/2008"


class CanvasError(CrepsError):
    """Canvas parameters that make no pyramid (views or detail out of range, a model below 2 pixels)."""


def window_header(window: grid.Window) -> str:
    """The X-Creps-Window text of a window: x0,y0,x1,y1 as shortest round-trip decimals
    (grid.parse_window, hence `creps-run --window`, reads back the same floats)."""
    return ",".join(repr(float(v)) for v in window)


@dataclass(frozen=True)
class Canvas:
    """The pyramid of a model trained at `resolution` x `resolution` (its img_resolution)."""

    resolution: int
    views: int = DEFAULT_VIEWS
    detail: float = DEFAULT_DETAIL
    tile_size: int = TILE_SIZE
    overlap: int = OVERLAP

    def __post_init__(self):
        if isinstance(self.views, bool) or not isinstance(self.views, int) or not 1 <= self.views <= 1024:
            raise CanvasError(f"canvas views {self.views!r} must be a whole number from 1 to 1024")
        if not (isinstance(self.detail, (int, float)) and MIN_DETAIL <= self.detail <= MAX_DETAIL):
            raise CanvasError(f"canvas detail {self.detail!r} must be a number from {MIN_DETAIL} to {MAX_DETAIL}")
        if self.resolution < 2:
            raise CanvasError(f"a model trained at {self.resolution} pixel(s) has no pixel spacing to refine")
        if self.tile_size < 1 or not 0 <= self.overlap < self.tile_size:
            raise CanvasError(f"tile size {self.tile_size} with overlap {self.overlap} makes no tiles")
        try:
            grid.check_size(self.width, self.height)
        except ValueError as exc:
            raise CanvasError(f"{self.views} views at detail {self.detail}: {exc}") from None

    @classmethod
    def of(cls, model: dict, views: int = DEFAULT_VIEWS, detail: float = DEFAULT_DETAIL) -> Canvas:
        """The canvas of a bundle's model section."""
        return cls(int(model["img_resolution"]), views, float(detail))

    @property
    def step_exponent(self) -> int:
        """p of step = 2**-p: the smallest p >= 0 with 2**p >= detail * (R - 1)."""
        density, p = self.detail * (self.resolution - 1), 0
        while (1 << p) < density:
            p += 1
        return p

    @property
    def step(self) -> float:
        """The deepest level's pixel spacing (a power of two)."""
        return math.ldexp(1.0, -self.step_exponent)

    @property
    def width(self) -> int:
        """The deepest level's width in pixels."""
        return self.views << self.step_exponent

    @property
    def height(self) -> int:
        return self.width

    @property
    def x0(self) -> float:
        """The centre of the deepest level's pixel (0, 0), x and y alike."""
        return 0.5 - self.views / 2

    @property
    def y0(self) -> float:
        return self.x0

    @property
    def max_level(self) -> int:
        """L: the deepest level (level 0 is 1 x 1)."""
        return (max(self.width, self.height) - 1).bit_length()  # ceil(log2(side)), 0 for one pixel

    @property
    def levels(self) -> int:
        return self.max_level + 1

    def level_size(self, level: int) -> tuple[int, int]:
        """(width, height) of `level` in pixels."""
        shrink = 1 << (self.max_level - level)
        return -(-self.width // shrink), -(-self.height // shrink)

    def tile_counts(self, level: int) -> tuple[int, int]:
        """(columns, rows) of tiles at `level`."""
        width, height = self.level_size(level)
        return -(-width // self.tile_size), -(-height // self.tile_size)

    def has_tile(self, level: int, col: int, row: int) -> bool:
        if not 0 <= level <= self.max_level:
            return False
        cols, rows = self.tile_counts(level)
        return 0 <= col < cols and 0 <= row < rows

    def tile_span(self, index: int, length: int) -> range:
        """The level pixels of tile `index` along an axis of `length` pixels, overlap included."""
        start = index * self.tile_size - self.overlap
        return range(max(0, start), min(length, start + self.tile_size + 2 * self.overlap))

    def tile_pixels(self, level: int, col: int, row: int) -> tuple[range, range]:
        """(level columns, level rows) a tile covers."""
        width, height = self.level_size(level)
        return self.tile_span(col, width), self.tile_span(row, height)

    def coordinate(self, level: int, index: int, origin: float) -> float:
        """The plane coordinate of pixel `index` of `level` along an axis starting at `origin`."""
        shrink = 1 << (self.max_level - level)
        return origin + self.step * ((index + 0.5) * shrink - 0.5)

    def window(self, level: int, col: int, row: int) -> tuple[grid.Window, tuple[int, int]]:
        """(the window, (width, height)) of a tile: the centres of its first and last pixels,
        what `creps-run --window ... --size WxH` takes to paint the same tile."""
        if not self.has_tile(level, col, row):
            raise CrepsError(f"no tile {col}_{row} at level {level} of this canvas")
        columns, rows = self.tile_pixels(level, col, row)
        window = grid.Window(self.coordinate(level, columns[0], self.x0), self.coordinate(level, rows[0], self.y0),
                             self.coordinate(level, columns[-1], self.x0), self.coordinate(level, rows[-1], self.y0))
        return window, (len(columns), len(rows))

    def descriptor(self) -> str:
        """The Deep Zoom descriptor (.dzi XML) of the deepest level."""
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Image xmlns={quoteattr(DZI_NAMESPACE)} TileSize=\"{self.tile_size}\" "
                f"Overlap=\"{self.overlap}\" Format={quoteattr(FORMAT)}>"
                f"<Size Width=\"{self.width}\" Height=\"{self.height}\"/></Image>\n")

    def info(self) -> dict:
        """The canvas as JSON-ready numbers (for /info)."""
        return {"views": self.views, "detail": self.detail, "step": self.step, "x0": self.x0, "y0": self.y0,
                "width": self.width, "height": self.height, "levels": self.levels, "tile_size": self.tile_size,
                "overlap": self.overlap, "format": FORMAT}
