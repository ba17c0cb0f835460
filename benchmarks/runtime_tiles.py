"""Tile shape and line chunk sweep for the runtime (ONNX Runtime CPU, all cores, published 256 config).

Times the pixel stage per tile shape and the line stage per chunk length on the same
bundle, so DEFAULT_TILE and DEFAULT_LINES in creps/runtime/tiling.py follow a measurement.
Usage: python benchmarks/runtime_tiles.py [--bundle DIR] [--out benchmarks/results]
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import click

from creps import grid
from creps.bench import export_model, flops, gemm_ceiling, line_macs_per_slot, pixel_macs
from creps.runtime import Runtime
from creps.runtime.backends import available_cores

TILES = [(32, 32), (64, 32), (64, 64), (128, 64), (128, 128), (256, 128), (256, 256), (512, 512)]
CHUNKS = [64, 128, 256, 512, 1024]
IMAGE = (512, 512)


def best_of(fn, repeats=3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def sweep(bundle: Path) -> dict:
    runtime = Runtime(bundle, backend="ort-cpu")
    model = runtime.model
    ws = runtime.mapping([0], 1.0)
    ys, xs = grid.coords(*IMAGE)
    cols, rows = runtime.lines(ws, ys, xs, runtime.plan(IMAGE))
    pixel_flop = 2 * pixel_macs(model)
    tiles = []
    for tile_w, tile_h in TILES:
        feeds = {"ws": ws, "cols": cols[:, :, :, :tile_h], "rows": rows[:, :, :, :tile_w]}
        calls = max(1, IMAGE[0] * IMAGE[1] // (tile_w * tile_h))  # one 512x512 image's worth of tiles
        runtime.backend.run("pixels", feeds)
        seconds = best_of(lambda: [runtime.backend.run("pixels", feeds) for _ in range(calls)]) / calls
        tiles.append({"tile": [tile_w, tile_h], "gflops": pixel_flop * tile_w * tile_h / seconds / 1e9})
        click.echo(f"pixels tile {tile_w}x{tile_h}: {tiles[-1]['gflops']:.0f} GFLOP/s")
    line_flop = 2 * model["rank"] * line_macs_per_slot(model)
    chunks = []
    for chunk in CHUNKS:
        feeds = {"ws": ws, "ys": ys[: chunk // 2], "xs": xs[: chunk - chunk // 2]}
        runtime.backend.run("lines", feeds)
        seconds = best_of(lambda: runtime.backend.run("lines", feeds))
        chunks.append({"lines": chunk, "gflops": line_flop * chunk / seconds / 1e9})
        click.echo(f"lines chunk {chunk}: {chunks[-1]['gflops']:.0f} GFLOP/s")
    return {"pixel_tiles": tiles, "line_chunks": chunks, "image_flop_512": flops(model, *IMAGE)}


@click.command()
@click.option("--bundle", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("benchmarks/results"))
def main(bundle, out):
    with tempfile.TemporaryDirectory() as folder:
        if bundle is None:
            bundle, _ = export_model({}, Path(folder))
        report = {"load_average_start": os.getloadavg(), "threads": available_cores(),
                  "gemm_ceiling_gflops": gemm_ceiling(available_cores()), **sweep(bundle),
                  "load_average_end": os.getloadavg()}
    best_tile = max(report["pixel_tiles"], key=lambda t: t["gflops"])
    best_chunk = max(report["line_chunks"], key=lambda c: c["gflops"])
    click.echo(f"ceiling {report['gemm_ceiling_gflops']:.0f} GFLOP/s; fastest tile {best_tile['tile']}, "
               f"fastest line chunk {best_chunk['lines']}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "runtime_tiles.json").write_text(json.dumps(report, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
