"""The C++ runtime (runtime/cpp, libcreps_runtime) against the Python runtime on ONNX Runtime CPU, the same
threads (all cores) and the same bundles: the bundled default model and the published 256 config (random
weights, as creps-bench makes it).

Time: the best of --repeats images of seed 0 after one warm-up image, in-process on each side (Python's
Runtime.generate, C++'s Runtime::generate through creps-bench-cpp), at 512x512 and 2048x512; each pair of
images compared byte for byte (the bit-exactness count). Peak RSS: the whole command, creps-run against
creps-run-cpp streaming the PNG, at 1024x256 and 8192x2048 on the published config (ru_maxrss of the
child). Binary sizes of the built library and CLI. Needs runtime/cpp built first (runtime/cpp/build.sh).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from common import benchmark

from creps.bench import export_model
from creps.cli import entry_point
from creps.errors import CrepsError
from creps.runtime.backends import available_cores

BUILD = Path(__file__).resolve().parents[1] / "runtime" / "cpp" / "build"
TIME_SIZES = ((512, 512), (2048, 512))
RSS_SIZES = ((1024, 256), (8192, 2048))
# The Python side of one timing: the same protocol as creps-bench-cpp (bench/creps_bench.cpp).
PYTHON_TIMER = """
import json, sys, time
import numpy as np
from creps.runtime import Runtime
bundle, width, height, repeats, threads, raw = sys.argv[1:]
runtime = Runtime(bundle, backend="ort-cpu", threads=int(threads))
runtime.generate(0, (64, 64))
best = float("inf")
for _ in range(int(repeats)):
    start = time.perf_counter()
    images = runtime.generate(0, (int(width), int(height)))
    best = min(best, time.perf_counter() - start)
open(raw, "wb").write(images[0].tobytes())
print(json.dumps({"seconds": best, "backend": runtime.backend_name}))
"""


def binary(build: Path, name: str) -> Path:
    path = build / name
    if not path.is_file():
        raise CrepsError(f"{path} is missing: build the C++ runtime first (runtime/cpp/build.sh {build})")
    return path


def run_json(command: list[str]) -> dict:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise CrepsError(f"{Path(command[0]).name} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_rss(command: list[str]) -> int:
    """The child's peak resident set in bytes: its VmHWM, read until it exits (ru_maxrss would carry over
    this process's own peak, which a forked child inherits)."""
    errors = tempfile.TemporaryFile()  # a file, not a pipe: a progress bar's output never blocks the child
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
    peak = 0
    while child.poll() is None:
        try:
            status = Path(f"/proc/{child.pid}/status").read_text()
            peak = max(peak, next(int(line.split()[1]) * 1024 for line in status.splitlines()
                                  if line.startswith("VmHWM")))
        except (OSError, StopIteration):  # exiting: the last reading stands
            pass
        time.sleep(0.02)
    if child.returncode != 0:
        errors.seek(0)
        raise CrepsError(f"{Path(command[0]).name} failed: {errors.read().decode().strip()[-200:]}")
    return peak


def timings(build: Path, bundle: Path, threads: int, repeats: int, folder: Path) -> list[dict]:
    rows = []
    for width, height in TIME_SIZES:
        size = f"{width}x{height}"
        py_raw, cpp_raw = folder / "python.rgb", folder / "cpp.rgb"
        python = run_json([sys.executable, "-c", PYTHON_TIMER, str(bundle), str(width), str(height), str(repeats),
                           str(threads), str(py_raw)])
        cpp = run_json([str(binary(build, "creps-bench-cpp")), str(bundle), size, str(repeats), str(threads),
                        str(cpp_raw)])
        a, b = np.fromfile(py_raw, np.uint8), np.fromfile(cpp_raw, np.uint8)
        rows.append({"size": size, "python_seconds": python["seconds"], "cpp_seconds": cpp["seconds"],
                     "cpp_vs_python": cpp["seconds"] / python["seconds"], "bytes": int(a.size),
                     "differing_bytes": int((a != b).sum()) if a.size == b.size else int(max(a.size, b.size))})
        click.echo(f"{bundle.name} {size}: python {python['seconds']:.3f} s, C++ {cpp['seconds']:.3f} s, "
                   f"{rows[-1]['differing_bytes']} of {a.size} bytes differ")
    return rows


def memory(build: Path, bundle: Path, threads: int, folder: Path) -> dict:
    out = {}
    for width, height in RSS_SIZES:
        size = f"{width}x{height}"
        common = ["--bundle", str(bundle), "--size", size, "--backend", "ort-cpu", "--threads", str(threads)]
        python = peak_rss([str(Path(sys.executable).parent / "creps-run"), *common, "--out", str(folder / "p.png")])
        cpp = peak_rss([str(binary(build, "tools/creps-run-cpp")), *common, "--out", str(folder / "c.png")])
        out[size] = {"python_bytes": python, "cpp_bytes": cpp}
        click.echo(f"peak RSS {size}: python {python / 2**20:.0f} MiB, C++ {cpp / 2**20:.0f} MiB")
    small, large = (f"{w}x{h}" for w, h in RSS_SIZES)
    for side in ("python", "cpp"):
        out[f"{side}_ratio"] = out[large][f"{side}_bytes"] / out[small][f"{side}_bytes"]
    return out


@benchmark("cpp_runtime", __doc__, takes="about 6 min on 2 cores")
@click.option("--build", type=click.Path(file_okay=False, path_type=Path), default=BUILD, show_default=True,
              help="The C++ runtime's build folder (runtime/cpp/build.sh BUILD_DIR).")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True, help="Timed images per side.")
@click.option("--quick", is_flag=True, help="Only the bundled model's timings (no published config, no RSS).")
def main(build, repeats, quick) -> dict:
    from creps.runtime.default import default_bundle

    threads = available_cores()
    report = {"threads": threads, "backend": "ort-cpu",
              "binary_bytes": {name: binary(build, name).stat().st_size
                               for name in ("libcreps_runtime.so", "libcreps_runtime.a", "tools/creps-run-cpp")}}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        report["bundled"] = timings(build, default_bundle(), threads, repeats, folder)
        if not quick:
            published, _ = export_model({}, folder)
            report["published_256"] = timings(build, published, threads, repeats, folder)
            report["peak_rss"] = memory(build, published, threads, folder)
    return report


if __name__ == "__main__":
    entry_point(main)()
