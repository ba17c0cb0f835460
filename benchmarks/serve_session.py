"""The scripted pan-and-zoom session of the creps-serve benchmarks (serve_tiles.py, serve_load.py).

A viewer of `screen` pixels (1280 x 720) on a canvas: it opens with the whole canvas fitted
to the screen, zooms in on the trained view one level at a time down to the deepest level,
pans right then down by half a screen at a time, zooms out one level and pans back left,
zooms in again there and pans up. Each step asks for the tiles its screen shows, centre
first (as a viewer wants them), and only those not asked for before (a browser's cache
holds the rest). Scripted, not random: every run and every client asks for the same tiles
in the same order, so runs compare.

    from serve_session import session
    for view in session(canvas, seed=0, psi=0.7):   # [[TileKey, ...], ...], one list per step
        ...

Run as a script, it prints and records the session on the default and published canvases
(each step's level, centre and new tiles), what the figures of those benchmarks were
measured on.
"""

from __future__ import annotations

import math

import click

from common import benchmark

from creps.cli import entry_point
from creps.serve import Canvas, TileKey

SCREEN = (1280, 720)


def level_index(canvas: Canvas, level: int, x: float, origin: float) -> float:
    """The (fractional) pixel index of plane coordinate x at `level`: Canvas.coordinate inverted."""
    shrink = 1 << (canvas.max_level - level)
    return ((x - origin) / canvas.step + 0.5) / shrink - 0.5


def visible(canvas: Canvas, level: int, cx: float, cy: float, screen=SCREEN) -> list[tuple[int, int]]:
    """(col, row) of the tiles a screen centred on (cx, cy) shows at `level`, nearest the centre first."""
    cols, rows = canvas.tile_counts(level)
    i, j = level_index(canvas, level, cx, canvas.x0), level_index(canvas, level, cy, canvas.y0)

    def span(centre: float, half: float, count: int) -> range:
        first = max(0, math.floor((centre - half) / canvas.tile_size))
        return range(first, min(count, math.floor((centre + half) / canvas.tile_size) + 1))

    tiles = [(c, r) for r in span(j, screen[1] / 2, rows) for c in span(i, screen[0] / 2, cols)]
    centre = ((i + 0.5) / canvas.tile_size - 0.5, (j + 0.5) / canvas.tile_size - 0.5)
    return sorted(tiles, key=lambda t: ((t[0] - centre[0]) ** 2 + (t[1] - centre[1]) ** 2, t))


def steps(canvas: Canvas, screen=SCREEN) -> list[tuple[int, float, float]]:
    """The session's views: (level, centre x, centre y). A pan that would take the screen past
    the canvas's edge turns back (a small canvas shows its far side, a large one stays near
    the trained view)."""
    fit = max(l for l in range(canvas.levels) if max(canvas.level_size(l)) <= max(screen))
    deepest = canvas.max_level
    views = [(level, 0.5, 0.5) for level in range(fit, deepest + 1)]
    low, high = canvas.x0, canvas.x0 + canvas.step * (canvas.width - 1)  # the same on both axes

    def move(position: float, direction: int, half: float) -> tuple[float, int]:
        lo, hi = low + half, high - half  # centres that keep the screen on the canvas
        for d in (direction, -direction):
            if lo <= position + d * half <= hi:
                return position + d * half, d
        return (min(max(position, lo), hi) if lo <= hi else (low + high) / 2), direction

    def pan(level, x, y, dx, dy, count):  # by half a screen of `level` pixels per step
        spacing = canvas.step * (1 << (deepest - level))
        for _ in range(count):
            x, dx = move(x, dx, spacing * screen[0] / 2) if dx else (x, dx)
            y, dy = move(y, dy, spacing * screen[1] / 2) if dy else (y, dy)
            views.append((level, x, y))
        return x, y

    x, y = pan(deepest, 0.5, 0.5, 1, 0, 4)
    x, y = pan(deepest, x, y, 0, 1, 2)
    x, y = pan(deepest - 1, x, y, -1, 0, 4)
    views.append((deepest, x, y))
    pan(deepest, x, y, 0, -1, 3)
    return views


def session(canvas: Canvas, seed: int = 0, psi: float = 1.0, screen=SCREEN) -> list[list[TileKey]]:
    """The tiles each step of the session asks for, new ones only, in order."""
    seen, out = set(), []
    for level, x, y in steps(canvas, screen):
        keys = [TileKey(seed, psi, level, c, r) for c, r in visible(canvas, level, x, y, screen)
                if (level, c, r) not in seen]
        seen.update((k.level, k.col, k.row) for k in keys)
        out.append(keys)
    return out


@benchmark("serve_session", __doc__, takes="about 0.1 min (no rendering)")
def main() -> dict:
    canvases = {}
    for name, resolution in (("default", 64), ("published", 256)):
        canvas = Canvas(resolution)
        views = session(canvas)
        canvases[name] = {"img_resolution": resolution, "canvas": canvas.info(), "screen": list(SCREEN),
                          "tiles": sum(map(len, views)),
                          "steps": [{"level": level, "centre": [x, y], "new_tiles": len(keys)}
                                    for (level, x, y), keys in zip(steps(canvas), views)]}
        click.echo(f"{name} ({resolution}x{resolution}): {len(views)} steps, {canvases[name]['tiles']} tiles; "
                   f"tiles per step {[len(keys) for keys in views]}")
    return {"canvases": canvases}


if __name__ == "__main__":
    entry_point(main)()
