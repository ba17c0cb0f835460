"""Batch against one image at a time: creps-run's `--batch` at 512x512, 8 seeds, ONNX Runtime CPU.

Each case runs in its own process (peak RSS is the process's): `Runtime.save` of 8 seeds
streamed to PNG files, timed whole (wall and CPU seconds, best of --repeats). The cases:
batch 1; batch 8 with the planner's defaults (the default tile's pixels and line chunk's
lines shared by the batch, runtime/tiling.py); and batch 8 with the batch-1 tile (128x64)
and chunk (256 lines) per call, as the planner gave them before, so the cause is measured.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from common import benchmark

from creps.cli import entry_point

CASES = (
    ("batch 1", 1, None, None),
    ("batch 8", 8, None, None),
    ("batch 8, batch-1 tile and chunk per call (before)", 8, (128, 64), 256),
)


def case(bundle: str, size, seeds: int, batch: int, tile, line_chunk) -> dict:
    """One case in this process: its timings, plan and the process's peak RSS."""
    from creps.runtime import Runtime

    runtime = Runtime(bundle, backend="ort-cpu", tile=tile, line_chunk=line_chunk)
    plan = runtime.plan(size, batch)
    with tempfile.TemporaryDirectory() as folder:
        paths = [Path(folder) / f"{seed}.png" for seed in range(seeds)]
        wall, cpu = time.perf_counter(), time.process_time()
        runtime.save(paths, list(range(seeds)), size, batch=batch)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "tile": list(plan.tile),
            "line_chunks": len(plan.line_chunks), "peak_rss_mb": round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def in_subprocess(job: dict) -> dict:
    code = ("import json, sys; sys.path.insert(0, sys.argv[2]); import batch; "
            "print(json.dumps(batch.case(**json.loads(sys.argv[1]))))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(job), str(Path(__file__).parent)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise click.ClickException(f"benchmark case failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@benchmark("batch", __doc__, takes="about 1 min on 2 cores (three cases of about 20 CPU seconds; a first run also "
                             "exports the default model, about 3 min)")
@click.option("--bundle", type=click.Path(exists=True, file_okay=False), default=None,
              help="Bundle folder [default: the bundled default model, exported once as creps-run does].")
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs per case (the best is kept).")
def main(bundle, repeats) -> dict:
    if bundle is None:
        from creps.runtime.default import default_bundle

        bundle = str(default_bundle())
    size, seeds = (512, 512), 8
    results = []
    for label, batch, tile, line_chunk in CASES:
        job = {"bundle": bundle, "size": size, "seeds": seeds, "batch": batch, "tile": tile,
               "line_chunk": line_chunk}
        runs = [in_subprocess(job) for _ in range(repeats)]
        best = min(runs, key=lambda r: r["wall_s"])
        results.append({"case": label, "batch": batch, **best})
        click.echo(f"{label:52s} {best['wall_s']:6.2f} s wall {best['cpu_s']:6.2f} s CPU "
                   f"{best['peak_rss_mb']:6.0f} MB  tile {best['tile'][0]}x{best['tile'][1]}, "
                   f"{best['line_chunks']} line chunks")
    return {"size": list(size), "seeds": seeds, "backend": "ort-cpu", "bundle": bundle, "cases": results}


if __name__ == "__main__":
    entry_point(main)()
