"""creps-serve's tile renderer on ONNX Runtime CPU: tile latency with a cold and a warm line
cache, and what the line cache saves over the scripted pan-and-zoom session.

For each model (the bundled 64x64 default model; the published 256 configuration with
random weights, exported once into a temporary folder as creps-bench makes it), on the
default canvas (16 views, detail 4):

- tile latency: an inside tile of the deepest level, 258 x 258 pixels (256 and the overlap
  on each side), near the trained view. Cold: a new TileRenderer each time (the mapping,
  the lines of the tile's ys and xs, then the pixels and the PNG). Warm: the same tile
  again from the same renderer (its row's and column's lines cached: pixels and PNG).
  Median and best of --repeats (cold and warm alternated), seconds per tile, tiles one at
  a time (each tile's own work runs on every core, as the runtime runs it).
- the session (benchmarks/serve_session.py: a 1280 x 720 screen zooming in on the trained
  view, panning, zooming out, back in), its tiles one after another, with a line cache of
  --cache-memory and with none (every tile computes its ys and xs): seconds, line
  evaluations (tile row and column sides computed), the cache's hit rate and the speed-up.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import click

from common import benchmark
from serve_session import SCREEN, session

from creps.bench import export_model, timed
from creps.cli import entry_point
from creps.runtime import Runtime
from creps.runtime.default import default_bundle
from creps.serve import Canvas, TileKey, TileRenderer
from creps.serve.options import cache_memory_option

MODELS = ("default", "published")


def summary(seconds: list[float]) -> dict:
    return {"median_s": round(statistics.median(seconds), 4), "best_s": round(min(seconds), 4),
            "runs": len(seconds)}


def latency(runtime: Runtime, canvas: Canvas, repeats: int) -> dict:
    level = canvas.max_level
    cols, rows = canvas.tile_counts(level)
    key = TileKey(0, 0.7, level, cols // 2, rows // 2)  # its window starts at the trained view's centre
    TileRenderer(runtime, canvas, 0).render(TileKey(1, 0.7, level, 1, 1))  # sessions and arenas warm
    renderer = TileRenderer(runtime, canvas)
    tile = renderer.render(key)
    cold, warm = [], []
    for _ in range(repeats):  # alternated, so a load that changes meanwhile hits both alike
        cold.append(timed(lambda: TileRenderer(runtime, canvas).render(key)))
        warm.append(timed(lambda: renderer.render(key)))
    return {"tile": f"level {level} tile {key.col}_{key.row}", "size": list(tile.size), "cold": summary(cold),
            "warm": summary(warm), "warm_speedup": round(statistics.median(cold) / statistics.median(warm), 2)}


def run_sessions(runtime: Runtime, canvas: Canvas, cache_bytes: int) -> dict:
    """The session twice, with a line cache of `cache_bytes` and with none, tile by tile
    alternately (in alternating order), so a load that changes meanwhile hits both alike."""
    renderers = {"cached": TileRenderer(runtime, canvas, cache_bytes), "uncached": TileRenderer(runtime, canvas, 0)}
    keys = [key for view in session(canvas, seed=0, psi=0.7) for key in view]
    seconds = dict.fromkeys(renderers, 0.0)
    for i, key in enumerate(keys):
        for name in (("cached", "uncached") if i % 2 == 0 else ("uncached", "cached")):
            seconds[name] += timed(lambda: renderers[name].render(key))
    out = {}
    for name, renderer in renderers.items():
        stats = renderer.stats()
        asked = stats["hits"] + stats["misses"] + stats["coalesced"]
        out[name] = {"cache_bytes": renderer.lines.max_bytes, "tiles": len(keys), "seconds": round(seconds[name], 2),
                     "seconds_per_tile": round(seconds[name] / len(keys), 4), "line_evaluations": stats["misses"],
                     "line_hit_rate": round(stats["hits"] / asked, 3), "evictions": stats["evictions"],
                     "cache_bytes_used": stats["bytes"]}
    return out


def measure_model(name: str, bundle: Path, repeats: int, threads: int | None, cache_memory: int,
                  with_session: bool) -> dict:
    with Runtime(bundle, backend="ort-cpu", threads=threads) as runtime:
        canvas = Canvas.of(runtime.model)
        row = {"model": name, "img_resolution": canvas.resolution, "canvas": canvas.info(),
               "backend": runtime.backend_name, "precision": runtime.precision,
               "latency": latency(runtime, canvas, repeats)}
        lat = row["latency"]
        click.echo(f"{name}: {lat['size'][0]}x{lat['size'][1]} tile cold {lat['cold']['median_s'] * 1e3:.0f} ms, "
                   f"warm {lat['warm']['median_s'] * 1e3:.0f} ms (median of {repeats})")
        if with_session:
            sessions = run_sessions(runtime, canvas, cache_memory)
            cached, uncached = sessions["cached"], sessions["uncached"]
            row["session"] = {"screen": list(SCREEN), **sessions,
                              "speedup": round(uncached["seconds"] / cached["seconds"], 2),
                              "line_evaluations_saved": round(1 - cached["line_evaluations"]
                                                              / uncached["line_evaluations"], 3)}
            click.echo(f"{name}: session of {cached['tiles']} tiles: {cached['seconds']:.1f} s cached "
                       f"({cached['line_evaluations']} line evaluations, hit rate {cached['line_hit_rate']:.0%}) vs "
                       f"{uncached['seconds']:.1f} s without ({uncached['line_evaluations']}): "
                       f"{row['session']['speedup']:.2f}x")
        return row


@benchmark("serve_tiles", __doc__, takes="about 15 min on 2 cores (the default model's first export: a few more)")
@click.option("--models", default=",".join(MODELS), show_default=True, help="Models, comma-separated.")
@click.option("--bundle", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A bundle of the published 256 config [default: exported from random weights].")
@click.option("--repeats", type=click.IntRange(min=1), default=7, show_default=True, help="Tiles timed per case.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: all cores).")
@click.option("--session/--no-session", "with_session", default=True, show_default=True,
              help="Also run the scripted session with and without the line cache.")
@cache_memory_option
def main(models, bundle, repeats, threads, with_session, cache_memory) -> dict:
    names = [m.strip() for m in models.split(",") if m.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown or not names:
        raise click.UsageError(f"--models {models}: choose from {', '.join(MODELS)}")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            if name == "default":
                path = default_bundle()
            else:
                path = bundle or export_model({}, Path(folder))[0]
            rows.append(measure_model(name, path, repeats, threads, cache_memory, with_session))
    return {"backend": "ort-cpu (CPU; no GPU figure here)", "models": rows}


if __name__ == "__main__":
    entry_point(main)()
