"""Tile shape and line chunk sweep for the runtime (ONNX Runtime CPU, all cores, published 256 config).

Times whole images through the runtime (concurrent tiles and chunks, as creps-run runs
them) for each pixel tile shape at 512x512 and each line chunk length at 2048x512, so
DEFAULT_TILE and DEFAULT_LINES in runtime/tiling.py follow a measurement.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click

from common import benchmark

from creps.bench import export_model, flops, gemm_ceiling
from creps.cli import entry_point
from creps.runtime import Runtime
from creps.runtime.backends import available_cores

TILES = [(32, 32), (64, 32), (64, 64), (128, 64), (128, 128), (256, 128), (256, 256)]
CHUNKS = [64, 128, 256, 512, 1024]
TILE_IMAGE, CHUNK_IMAGE = (512, 512), (2048, 512)


def best_seconds(runtime: Runtime, size, repeats: int = 3) -> float:
    runtime.generate(0, (64, 64))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runtime.generate(0, size)
        times.append(time.perf_counter() - start)
    return min(times)


def sweep(bundle: Path) -> dict:
    model = Runtime(bundle, backend="ort-cpu").model
    tiles, chunks = [], []
    for tile in TILES:
        seconds = best_seconds(Runtime(bundle, backend="ort-cpu", tile=tile), TILE_IMAGE)
        tiles.append({"tile": list(tile), "seconds": seconds,
                      "gflops": flops(model, *TILE_IMAGE)["total"] / seconds / 1e9})
        click.echo(f"{TILE_IMAGE} tile {tile}: {seconds:.3f} s, {tiles[-1]['gflops']:.0f} GFLOP/s")
    for chunk in CHUNKS:
        seconds = best_seconds(Runtime(bundle, backend="ort-cpu", line_chunk=chunk), CHUNK_IMAGE, 2)
        chunks.append({"lines": chunk, "seconds": seconds,
                       "gflops": flops(model, *CHUNK_IMAGE)["total"] / seconds / 1e9})
        click.echo(f"{CHUNK_IMAGE} line chunk {chunk}: {seconds:.3f} s, {chunks[-1]['gflops']:.0f} GFLOP/s")
    return {"pixel_tiles": tiles, "line_chunks": chunks}


@benchmark("runtime_tiles", __doc__, takes="about 4 min on 2 cores")
@click.option("--bundle", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A bundle of the published 256 config [default: exported from random weights].")
def main(bundle) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        if bundle is None:
            bundle, _ = export_model({}, Path(folder))
        report = {"threads": available_cores(), "gemm_ceiling_gflops": gemm_ceiling(available_cores()),
                  **sweep(bundle)}
    best_tile = min(report["pixel_tiles"], key=lambda t: t["seconds"])
    best_chunk = min(report["line_chunks"], key=lambda c: c["seconds"])
    click.echo(f"ceiling {report['gemm_ceiling_gflops']:.0f} GFLOP/s; fastest tile {best_tile['tile']}, "
               f"fastest line chunk {best_chunk['lines']}")
    return report


if __name__ == "__main__":
    entry_point(main)()
