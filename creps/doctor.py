"""creps-doctor: the first command on a machine with TensorRT and a GPU (a Jetson, a lent GPU).

For the tiny bundle the package ships and for the bundled default model's bundle (whose
first export needs PyTorch: without it, its row says so and the tiny bundle is still
checked), each in a temporary copy, it builds FP32 and FP16 engines as `creps-export --fp16
--trt` does (creps.calib's FP16 graphs, creps.export.trt's builder, one stage at a time to
time each), and runs every engine on the inputs that ONNX Runtime's FP32 graphs on the CPU
give it, then whole images through the runtime, at three sizes scaled to the model (one
non-square, one odd). It prints one table: the versions, then per bundle, precision and
graph the max abs error and PSNR against the CPU, build and run times, and the bar met or
missed. Exit 0 only if every check that ran passes.

The bars are the project's own. An FP32 engine is held to the tolerance its bundle's graphs
were verified to against PyTorch at export (the manifest's `verification.tolerance`:
absolute for values within [-1, 1], relative to the largest value beyond). FP16 images
(the pixel stage's output and the whole image) are held to creps.calib.bars' fp16 bar; the
FP16 line stage has no bar of its own: its error shows in the image's.

Torch-free. Without TensorRT, cuda-python or a GPU it says in one line what is missing;
the calib and export code it reuses is imported only once they are found.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
import tempfile
import time
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from creps import grid
from creps.cli import command, entry_point
from creps.errors import CrepsError
from creps.extras import missing, require
from creps.runtime import trt as trt_runtime
from creps.runtime.backends import BackendUnavailable, OrtBackend
from creps.runtime.bundle import read_bundle
from creps.runtime.default import default_bundle, tiny_bundle
from creps.runtime.generate import Runtime

SEED, PSI = 1, 0.7
PRECISIONS = ("fp32", "fp16")
DRIVER_FILE = Path("/proc/driver/nvidia/version")  # the kernel module's release (not on a Jetson's nvgpu)


@dataclasses.dataclass
class Row:
    """One line of the table: a graph's engine at one precision, or a bundle that was not checked."""

    bundle: str
    precision: str = "-"
    graph: str = "-"
    max_abs: float | None = None
    psnr_db: float | None = None  # None where not an image; math.inf for identical images
    bar: str = "-"
    build_s: float | None = None
    run_ms: float | None = None
    result: str = "-"  # pass, FAIL, skip, or - (no bar)
    note: str = ""


def find_gpu():
    """(tensorrt, cudart, Device), or CrepsError naming everything that is missing, in one line."""
    absent = []
    trt = cudart = device = None
    try:
        trt = trt_runtime.load_tensorrt()
    except BackendUnavailable as exc:
        absent.append(str(exc).removeprefix("tensorrt: "))
    try:
        cudart = trt_runtime.load_cudart()
        device = trt_runtime.current_device(cudart)
    except BackendUnavailable as exc:
        absent.append(str(exc).removeprefix("tensorrt: "))
    if absent:
        raise CrepsError(f"creps-doctor needs TensorRT, cuda-python and an NVIDIA GPU: {'; '.join(absent)}")
    return trt, cudart, device


def cuda_version(number: int) -> str:
    return f"{number // 1000}.{number % 1000 // 10}"  # 12060 -> 12.6


def versions(trt, cudart, device) -> str:
    runtime = cuda_version(trt_runtime.cuda_call(cudart, cudart.cudaRuntimeGetVersion()))
    driver = cuda_version(trt_runtime.cuda_call(cudart, cudart.cudaDriverGetVersion()))
    release = DRIVER_FILE.read_text() if DRIVER_FILE.is_file() else ""
    found = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", release)
    return (f"TensorRT {trt.__version__}, CUDA runtime {runtime}, driver {found.group(1) + ' ' if found else ''}"
            f"(CUDA {driver}), GPU {device.name}, compute capability {device.compute_capability}")


def sizes_for(model: dict) -> list[tuple[int, int]]:
    """Twice the training resolution square, a wide one, an odd one (64x64, 96x40, 33x17 at 32)."""
    r = model["img_resolution"]
    return [(2 * r, 2 * r), (3 * r, r * 5 // 4), (r + 1, r // 2 + 1)]


def stage_feeds(cpu: OrtBackend, model: dict, size: tuple[int, int]) -> dict[str, dict]:
    """Each stage's inputs for one image, from the FP32 graphs on the CPU."""
    ys, xs = grid.coords(*size)
    feeds = {"mapping": {"z": grid.seed_to_z(SEED, model["z_dim"]), "psi": np.array([PSI], np.float32)}}
    ws = cpu.run("mapping", feeds["mapping"])["ws"]
    feeds["lines"] = {"ws": ws, "ys": ys, "xs": xs}
    feeds["pixels"] = {"ws": ws, **cpu.run("lines", feeds["lines"])}
    return feeds


def within_profile(backend, stage: str, feeds: dict) -> dict:
    """The feeds cut to the engine's profile maxima (a whole image may exceed the runtime's largest call)."""
    cut = {}
    for name, value in feeds.items():
        ranges = backend.shape_range(stage, name)
        cut[name] = value if ranges is None else value[tuple(slice(0, hi) for _, hi in ranges)]
    return cut


class Judge:
    """Whether an error meets its bar, by the graph's precision (see the module docstring)."""

    def __init__(self, tolerance: float | None):
        self.tolerance = tolerance

    def bar(self, precision: str, image: bool) -> str:
        from creps.calib.bars import PRECISION_BARS

        if precision == "fp32":
            return "no FP32 bar recorded" if self.tolerance is None else f"<= {self.tolerance:g} (rel. beyond 1)"
        bounds = PRECISION_BARS[precision].items()
        return ", ".join(f"{key} {'>=' if key.endswith('psnr_db') else '<='} {limit:g}" for key, limit in bounds) \
            if image else "-"

    def passes(self, precision: str, error: dict, magnitude: float) -> bool | None:
        """None where no bar applies (an FP16 graph's output that is not an image)."""
        from creps.calib.bars import shortfalls

        if precision == "fp32":
            return self.tolerance is not None and error["max_abs"] <= self.tolerance * max(1.0, magnitude)
        return None if "psnr_db" not in error else not shortfalls(precision, error)


def measure(name: str, precision: str, graph: str, judged: str, image: bool, judge: Judge, pairs: list,
            times: list[float], build_s: float | None = None) -> Row:
    """A row from (reference, engine) output dicts at each size and the engine's run times; `judged`:
    the precision whose bar applies (the graph's own: the mapping stays FP32 in an FP16 build)."""
    from creps.calib.samples import compare

    max_abs, psnr_db, verdicts = 0.0, math.inf, []
    for reference, test in pairs:
        for key in reference:
            error = compare(reference[key], test[key]) if image else {
                "max_abs": float(np.max(np.abs(test[key].astype(np.float64) - reference[key])))}
            finite = bool(np.isfinite(test[key]).all())  # compare counts NaN/Inf as 0 in max abs and PSNR
            verdicts.append(judge.passes(judged, error, float(np.max(np.abs(reference[key])))) if finite else False)
            max_abs = max(max_abs, error["max_abs"])
            if image and error["psnr_db"] is not None:  # None: identical images
                psnr_db = min(psnr_db, error["psnr_db"])
    result = "FAIL" if False in verdicts else "-" if None in verdicts else "pass"
    return Row(name, precision, graph, max_abs, psnr_db if image else None, judge.bar(judged, image), build_s,
               1000 * sum(times) / len(times), result)


def build(copy: Path, precision: str, sizes: list[tuple[int, int]]) -> dict[str, float]:
    """FP16 graphs if asked (analysed on the first size, judged on all), then one engine per stage; the
    build seconds per stage."""
    from creps.export.trt import build_engines
    from creps.export.trt_plan import build_plan

    if precision == "fp16":
        from creps.calib import calibrate_bundle
        from creps.calib.samples import Job

        jobs = tuple(Job(SEED, PSI, w, h) for w, h in sizes)
        calibrate_bundle(copy, fp16_graphs=True, jobs=jobs[:1], error_jobs=jobs)
    plan = build_plan(read_bundle(copy).manifest, precision, sizes)
    seconds = {}
    for stage in plan.stages:
        start = time.perf_counter()
        build_engines(copy, dataclasses.replace(plan, stages=[stage]))
        seconds[stage.stage] = time.perf_counter() - start
    return seconds


def check(name: str, source: Path, precision: str, work: Path) -> list[Row]:
    """The rows of one bundle at one precision, built and run in a copy under `work`."""
    copy = work / f"{name}-{precision}"
    shutil.copytree(source, copy)
    bundle = read_bundle(copy)
    judge = Judge((bundle.manifest.get("verification") or {}).get("tolerance"))
    sizes = sizes_for(bundle.model)
    try:
        build_s = build(copy, precision, sizes)
        bundle = read_bundle(copy)
        cpu = OrtBackend(bundle, concurrent=False)
        rows = []
        with trt_runtime.TensorRTBackend(bundle) as engines:
            feeds = [stage_feeds(cpu, bundle.model, size) for size in sizes]
            for stage, entry in bundle.engines.items():
                pairs, times = [], []
                for fed in feeds:
                    cut = within_profile(engines, stage, fed[stage])
                    start = time.perf_counter()
                    test = {k: v.copy() for k, v in engines.run(stage, cut).items()}  # views of reused buffers
                    times.append(time.perf_counter() - start)
                    pairs.append((cpu.run(stage, cut), test))
                rows.append(measure(name, precision, entry["graph"], entry["precision"], stage == "pixels", judge,
                                    pairs, times, build_s[stage]))
            pairs, times = [], []
            reference, runtime = Runtime(copy, backend=cpu), Runtime(copy, backend=engines)
            for size in sizes:
                start = time.perf_counter()
                test = runtime.generate(SEED, size, PSI, out="float")
                times.append(time.perf_counter() - start)
                pairs.append(({"img": reference.generate(SEED, size, PSI, out="float")}, {"img": test}))
            rows.append(measure(name, precision, "image", precision, True, judge, pairs, times))
        return rows
    except CrepsError as exc:  # a refused FP16 graph, a failed build, an engine that does not run
        return [Row(name, precision, result="FAIL", note=" ".join(str(exc).split()))]


def bundles() -> list[tuple[str, Path | None, str]]:
    """(name, folder or None, why not) of the bundles to check; a default bundle that cannot be
    made for want of PyTorch is not checked, one whose export fails is a failure (CrepsError)."""
    found = [("tiny", tiny_bundle(), "")]
    try:
        found.append(("default", default_bundle(), ""))
    except CrepsError as exc:
        if not missing("export"):
            raise
        found.append(("default", None, " ".join(str(exc).split())))
    return found


def table(rows: list[Row]) -> list[str]:
    def number(value, spec: str) -> str:
        return "-" if value is None else "inf" if value == math.inf else format(value, spec)

    head = ("bundle", "precision", "graph", "max abs", "PSNR dB", "bar", "build s", "run ms", "result")
    cells = [head] + [(r.bundle, r.precision, r.graph, number(r.max_abs, ".2e"), number(r.psnr_db, ".1f"), r.bar,
                       number(r.build_s, ".1f"), number(r.run_ms, ".2f"), r.result) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    return [lines[0]] + [line + (f"  {row.note}" if row.note else "") for line, row in zip(lines[1:], rows)]


@command(epilog="""
\b
Example (the first command on a Jetson, or on any machine with TensorRT and a GPU):
  creps-doctor
""")
def cli():
    """Build FP32 and FP16 TensorRT engines for the tiny bundle and the default model, run them
    against ONNX Runtime on the CPU at three sizes, and print one table of errors, times and bars.

    Exit status 0 only if every check that ran meets its bar. Without TensorRT or a GPU, one
    line says what is missing.
    """
    trt, cudart, device = find_gpu()
    require("creps-doctor (FP16 graphs, PSNR)", "calib")
    header = versions(trt, cudart, device)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="creps-doctor-") as work:
        checks = bundles()
        steps = [(name, path, precision) for name, path, _ in checks if path for precision in PRECISIONS]
        for name, path, precision in tqdm(steps, desc="doctor", unit="build"):
            rows += check(name, path, precision, Path(work))
        rows += [Row(name, result="skip", note=why) for name, path, why in checks if path is None]
    sizes = "; ".join(f"{name} " + ", ".join(f"{w}x{h}" for w, h in sizes_for(read_bundle(path).model))
                      for name, path, _ in checks if path)
    click.echo(f"creps-doctor: {header}")
    click.echo(f"sizes: {sizes} (seed {SEED}, psi {PSI}); reference: ONNX Runtime FP32 graphs on the CPU")
    for line in table(rows):
        click.echo(line)
    failed = [r for r in rows if r.result == "FAIL"]
    checked = [r for r in rows if r.result in ("pass", "FAIL")]
    skipped = [r.bundle for r in rows if r.result == "skip"]
    click.echo(f"{len(checked) - len(failed)} of {len(checked)} checks pass"
               + (f"; not checked: {', '.join(skipped)}" if skipped else ""))
    if failed:
        raise CrepsError(f"creps-doctor: {len(failed)} check(s) miss their bar (the FAIL rows above)")


main = entry_point(cli)
