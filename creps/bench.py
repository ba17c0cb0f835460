"""creps-bench: the runtime's speed, memory and efficiency at the published 256 config, in one run.

The published config (random weights) is exported once into a temporary bundle. Each
measurement runs in a fresh subprocess, so its peak RSS is its own: the runtime writes a
streamed PNG as `creps-run` does, on one backend (`--backend`: ONNX Runtime CPU on all
cores by default, ONNX Runtime CUDA, or TensorRT with fp32 engines built for the
benchmarked sizes), and the project's PyTorch model (eager on the CPU; the better of all
cores and one thread) generates the same size where it fits in memory. Arithmetic comes
from the cost formulas of docs/model.md (multiply-adds x 2 = FLOP) and is set against
the float32 GEMM ceiling of the backend's device, a large MatMul through ONNX Runtime
(CPU, or CUDA with its data on the GPU) measured in the same run; TensorRT gets no
ceiling (a MatMul engine would need a build of its own). Also measured: tiling overhead
(default tile and line chunk vs one tile and one chunk; not on TensorRT, whose profiles
do not take the whole image as one tile) and the peak-RSS ratio of 8192x2048 to
1024x256 (host memory; device memory is not measured). The precision column: at
512x512 and 2048x512 the runtime runs each precision of the backend (`--precisions`;
fp32 and int8 on ort-cpu, also fp16 on ort-cuda and TensorRT), alternating with fp32,
after creps-calib made the bundle's fp16 / int8 graphs (kept below their bar too, so
they are measured, not refused), each beside its error: uint8 PSNR, max abs and pixels
changed of its PNG against the fp32 runtime's. Issue 5's targets are judged on
the CPU run only. A backend that cannot run here stops the command before the export.
Writes a table, JSON and a plot: runtime.json/.png for ort-cpu, runtime-BACKEND.json/.png
otherwise, into ./creps-bench-out/ (or --out); only --record updates the committed record
in the checkout's benchmarks/results/. This module also holds what the scripts under
benchmarks/ share with it: where a run writes, and the machine its record names.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from creps.cli import command, entry_point
from creps.errors import CrepsError
from creps.files import atomic_path
from creps.runtime.backends import ORT_PROVIDERS, Backend, check_provider, ort_provider
from creps.runtime.cpu import cpu

log = logging.getLogger(__name__)

SIZES = ((256, 256), (512, 512), (2048, 512), (8192, 2048))
RSS_SMALL, RSS_LARGE = (1024, 256), (8192, 2048)
OVERHEAD_SIZES = ((512, 512), (2048, 512))
ORIGINAL_512_SECONDS = 5.5  # the original code, eager PyTorch, 512x512 on this machine (issue 5)
QUICK_CONFIG = dict(z_dim=64, w_dim=64, img_resolution=32, mapping_layers=2, channel_base=2048, channel_max=64)
WORKER = "from creps.bench import worker; worker()"
BENCH_BACKENDS = ("ort-cpu", "ort-cuda", "tensorrt")
ORT_DEVICES = {"ort-cpu": "cpu", "ort-cuda": "cuda"}
NO_CEILING = "GEMM ceiling measured for ort-cpu and ort-cuda only (a TensorRT MatMul needs an engine build of its own)"
NO_ONE_TILE = "not measured on tensorrt: the engines' profiles do not take the whole image as one tile and one chunk"
PRECISION_SIZES = OVERHEAD_SIZES
# --quick: every layer of both stages INT8 (kernels exercised whatever the tiny model's error and speed),
# ranges from 8 latents, the sample jobs at the quick sizes (creps-calib's 512x512 and 2048x512 took minutes)
QUICK_CALIB = {"target_psnr": None, "range_seeds": 8, "plan_seeds": 0, "job_sizes": ((64, 64), (96, 32)),
               "int8_stages": ("lines", "pixels")}
PRECISION_ROUNDS = 2  # runs of each precision per size, alternated (min taken), so load changes hit all alike
BACKEND_PRECISIONS = {"ort-cpu": ("fp32", "int8"), "ort-cuda": ("fp32", "fp16", "int8"),
                      "tensorrt": ("fp32", "fp16", "int8")}
NOT_ON = {("ort-cpu", "fp16"): "ONNX Runtime on x86 has no fp16 kernels (fp16 graphs run slower than fp32 there): "
                               "fp16 is a GPU precision, measured with --backend ort-cuda or tensorrt"}


# ---- arithmetic (docs/model.md): multiply-adds per line slot and per pixel ----------------

def line_macs_per_slot(model: dict) -> int:
    """Σ C_in·C_out over the line layers: b4.fc1, then fc0, fc1, tores of every later block."""
    channels = [min(model["channel_base"] // res, model["channel_max"]) for res in [4] + list(model["blocks"])]
    macs = channels[0] ** 2
    for c_in, c_out in zip(channels, channels[1:]):
        macs += c_in * c_out + c_out * c_out + c_out * model["biline_channels"]
    return macs


def pixel_macs(model: dict) -> int:
    """Per pixel: entanglement, the applied decoders, decoder_img, block0 and block1."""
    c, blocks, rgb = model["biline_channels"], model["num_blocks"], model["img_channels"]
    decoder = c * 2 * c + 2 * c * 4 * c + 4 * c * 2 * c + 2 * c * c
    block0 = c * 4 * c + 4 * c * 4 * c + 4 * c * rgb
    block1 = 4 * c * 2 * c + 2 * c * 2 * c + 2 * c * rgb
    return blocks * c * model["rank"] + blocks * decoder + c * rgb + block0 + block1


def flops(model: dict, width: int, height: int) -> dict:
    lines = 2 * (width + height) * model["rank"] * line_macs_per_slot(model)
    pixels = 2 * width * height * pixel_macs(model)
    return {"lines": lines, "pixels": pixels, "total": lines + pixels}


# ---- measurements, each in its own process ------------------------------------------------

def peak_rss() -> int:
    """This process's peak resident set (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))


def matmul_session(backend: str, threads: int, n: int):
    """An ONNX Runtime session of x (rows, n) @ W (n, n) on the backend's provider, or
    BackendUnavailable when ONNX Runtime cannot use that provider here (it would otherwise
    fall back to the CPU without an error)."""
    from onnx import TensorProto, helper, numpy_helper

    ort, provider = ort_provider(backend)
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n), np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", n])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=[provider])
    check_provider(session, backend, provider)
    return session


def gemm_ceiling(threads: int, n: int = 2048, rows: int = 4096, repeats: int = 5, backend: str = "ort-cpu") -> float:
    """float32 GFLOP/s of one large MatMul through ONNX Runtime on the backend's device,
    input and output kept on that device (best of `repeats`)."""
    import onnxruntime as ort

    session = matmul_session(backend, threads, n)
    device = ORT_DEVICES[backend]
    binding = session.io_binding()
    x = np.random.default_rng(1).standard_normal((rows, n), np.float32)  # (rows, n)
    binding.bind_ortvalue_input("x", ort.OrtValue.ortvalue_from_numpy(x, device, 0))
    binding.bind_output("y", device)

    def once():
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    once()
    best = min(timed(once) for _ in range(repeats))
    return 2 * rows * n * n / best / 1e9


def gpu_name() -> str | None:
    """The CUDA device's name through cuda-python, if it is installed."""
    from creps.runtime.trt import current_device, load_cudart

    try:
        return current_device(load_cudart()).name
    except CrepsError:  # no cuda-python, or it cannot see the device
        return None


def backend_device(backend: str, threads: int) -> str:
    """What `backend` runs on, checked before any export: BackendUnavailable (one line)
    when it cannot run here."""
    if backend == "ort-cpu":
        return cpu()[0]
    if backend == "ort-cuda":
        import onnxruntime as ort

        matmul_session(backend, threads, 64)
        return f"{gpu_name() or 'CUDA GPU'}, onnxruntime {ort.__version__}"
    from creps.runtime.trt import current_device, load_cudart, load_tensorrt

    trt = load_tensorrt()
    device = current_device(load_cudart())
    return f"{device.name} (compute capability {device.compute_capability}), TensorRT {trt.__version__}"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class StageTimer(Backend):
    """Wraps a backend (and owns it: closing the timer closes it) and records each stage's
    wall-clock span (first call start to last call end: concurrent calls are not counted
    twice; the stages run one after another)."""

    def __init__(self, backend: Backend):
        self.backend, self.name, self.precision, self.spans = backend, backend.name, backend.precision, {}

    def _span(self, stage, start):
        first, _ = self.spans.get(stage, (start, 0.0))
        self.spans[stage] = (min(first, start), time.perf_counter())

    def run(self, stage, feeds):
        start = time.perf_counter()
        out = self.backend.run(stage, feeds)
        self._span(stage, start)
        return out

    def run_stream(self, stage, calls):  # the backend's own, so its pipelining (TensorRT) is kept
        start = time.perf_counter()
        for out in self.backend.run_stream(stage, calls):
            self._span(stage, start)
            yield out

    def close(self) -> None:
        self.backend.close()

    def shape_range(self, stage, input):
        return self.backend.shape_range(stage, input)

    def parallel(self, stage):
        return self.backend.parallel(stage)

    def seconds(self) -> dict:
        return {stage: end - start for stage, (start, end) in self.spans.items()}


def run_runtime(job: dict) -> dict:
    from creps.runtime import Runtime, read_bundle
    from creps.runtime.backends import OrtBackend

    size, backend = tuple(job["size"]), job["backend"]
    if job.get("one_call") and backend == "ort-cpu":
        # The whole image in one call uses every core inside that call (a fair untiled baseline).
        backend = OrtBackend(read_bundle(job["bundle"]), concurrent=False)
    runtime = Runtime(job["bundle"], backend=backend, tile=job.get("tile"), line_chunk=job.get("line_chunk"),
                      precision=job.get("precision"))
    runtime.generate(0, (64, 64))  # sessions and arenas warm
    timer = runtime.backend = StageTimer(runtime.backend)
    best = None
    with runtime, tempfile.TemporaryDirectory() as folder:
        for _ in range(job["repeats"]):
            timer.spans = {}
            seconds = timed(lambda: runtime.save([Path(folder) / "bench.png"], 0, size))
            if best is None or seconds < best["seconds"]:
                best = {"seconds": seconds, "stages": timer.seconds()}
        if job.get("image"):  # the PNG as written, for the precision column's error
            os.replace(Path(folder) / "bench.png", job["image"])
    plan = runtime.plan(size)
    return {**best, "peak_rss": peak_rss(), "tile": list(plan.tile), "tiles": len(plan.bands) * len(plan.columns),
            "line_chunks": len(plan.line_chunks), "precision": runtime.precision}


def run_torch(job: dict) -> dict:
    import torch

    from creps.model import Generator, GeneratorConfig

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(**job["config"])).eval()
    z = torch.from_numpy(np.random.RandomState(0).randn(1, G.z_dim).astype(np.float32))
    width, height = job["size"]
    with torch.no_grad():
        G(z, width=64, height=64)
        seconds = min(timed(lambda: G(z, width=width, height=height)) for _ in range(job["repeats"]))
    return {"seconds": seconds, "peak_rss": peak_rss()}


def worker() -> None:
    """Subprocess entry: one job (JSON in argv[1]) -> one JSON line on stdout."""
    job = json.loads(sys.argv[1])
    result = run_torch(job) if job["kind"] == "torch" else run_runtime(job)
    print(json.dumps({**result, "load_after": os.getloadavg()[0]}))


def in_subprocess(job: dict) -> dict:
    load = os.getloadavg()[0]
    done = subprocess.run([sys.executable, "-c", WORKER, json.dumps(job)], capture_output=True, text=True)
    if done.returncode != 0:
        raise click.ClickException(f"benchmark worker failed: {done.stderr.strip().splitlines()[-1:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "load_before": load}


def torch_fits(model: dict, width: int, height: int) -> bool:
    """Eager PyTorch holds all entangled features and a few 128-wide activations per pixel."""
    need = width * height * 4 * (2 * model["num_blocks"] * model["biline_channels"] + 3 * 128)
    with open("/proc/meminfo") as f:
        available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    return need < available / 2


# ---- the run ------------------------------------------------------------------------------

def bench_generator(config: dict):
    """The benchmark's model: `config` with PyTorch's random init from seed 0 (the same weights every call)."""
    import torch

    from creps.model import Generator, GeneratorConfig

    torch.manual_seed(0)
    return Generator(GeneratorConfig(**config)).eval()


def export_model(config: dict, folder: Path) -> tuple[Path, dict]:
    from creps.export import export_bundle

    bundle = export_bundle(bench_generator(config), folder / "bundle", verify=False)
    return bundle, json.loads((bundle / "manifest.json").read_text())["model"]


def size_name(size) -> str:
    return f"{size[0]}x{size[1]}"


def build_engines(bundle: Path, sizes, precision: str = "fp32") -> None:
    """TensorRT engines of `precision` (its graphs already in the bundle) whose profiles cover
    `sizes`, as `creps-export --trt --sizes` builds them."""
    from creps.export.trt import precision_and_engines

    precision_and_engines(bundle, fp16=precision == "fp16", int8=precision == "int8", trt=True, sizes=list(sizes),
                          echo=log.info)


# ---- the precision column -----------------------------------------------------------------

def precisions_of(backend: str, asked: str) -> tuple[list[str], dict[str, str]]:
    """(the precisions to measure on `backend`, {precision: why not} for those it cannot run):
    `asked` is "all" (the backend's) or a comma-separated list; fp32 always runs (the reference)."""
    names = list(BACKEND_PRECISIONS["tensorrt"]) if asked == "all" else [p for p in asked.split(",") if p]
    unknown = [p for p in names if p not in BACKEND_PRECISIONS["tensorrt"]]
    if unknown:
        raise click.BadParameter(f"{', '.join(unknown)} (choose from {', '.join(BACKEND_PRECISIONS['tensorrt'])} "
                                 "or all)", param_hint="--precisions")
    skipped = {p: NOT_ON[(backend, p)] for p in names if (backend, p) in NOT_ON}
    return ["fp32"] + [p for p in BACKEND_PRECISIONS[backend] if p in names and p != "fp32"], skipped


def add_precision_graphs(bundle: Path, config: dict, precisions: list[str], options: dict) -> dict:
    """creps-calib's fp16 / int8 graphs of the benchmark model in `bundle` (creps-calib's defaults,
    its weight width for this CPU included, or `options`: calibrate_bundle's, and `job_sizes` for
    its sample jobs' sizes); graphs below their bar are kept, so they are measured. Returns the
    calibration's recorded error per precision."""
    from creps.calib import calibrate_bundle
    from creps.calib.samples import DEFAULT_JOBS, Job
    from creps.runtime.cpu import exact_weight_bits

    wanted = set(precisions) - {"fp32"}
    if not wanted:
        return {}
    G = bench_generator(config) if "int8" in wanted else None  # INT8 re-exports the folded graphs from it
    options = dict(options)
    sizes = options.pop("job_sizes", None)
    jobs = DEFAULT_JOBS if sizes is None else tuple(Job(j.seed, j.psi, *size) for j, size in zip(DEFAULT_JOBS, sizes))
    report = calibrate_bundle(bundle, "fp16" in wanted, "int8" in wanted, G, jobs, keep_below_bar=True,
                              weight_bits=exact_weight_bits(), **options)
    return {p: report[p][key]["worst"] for p, key in (("fp16", "predicted_error"), ("int8", "measured_error"))
            if p in report}


def precision_bundles(bundle: Path, backend: str, precisions: list[str], folder: Path) -> dict[str, Path]:
    """The bundle each precision runs from: the same one on ONNX Runtime (the runtime picks the
    graphs); on TensorRT a copy per reduced precision with engines built in it."""
    if backend != "tensorrt":
        return {p: bundle for p in precisions}
    import shutil

    found = {"fp32": bundle}
    for precision in precisions[1:]:
        found[precision] = Path(shutil.copytree(bundle, folder / f"bundle-{precision}"))  # engines rebuilt
        build_engines(found[precision], PRECISION_SIZES, precision)
    return found


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))  # (H, W, 3) uint8


def uint8_error(reference: np.ndarray, test: np.ndarray) -> dict:
    """Error of uint8 image `test` against `reference` ((H, W, 3)): PSNR (peak 255; None when
    identical), max abs in levels, and the share of pixels with any channel changed."""
    diff = test.astype(np.float64) - reference
    mse = float(np.mean(diff**2))
    return {"uint8_psnr_db": None if mse == 0 else round(10 * np.log10(255.0**2 / mse), 2),
            "uint8_max_abs": int(np.max(np.abs(diff))), "pixels_changed": float(np.mean(np.any(diff != 0, axis=-1)))}


def measure_precisions(bundles: dict[str, Path], backend: str, sizes, folder: Path, rounds: int = PRECISION_ROUNDS,
                       repeats: int = 2) -> list[dict]:
    """Per size, each precision's best time over `rounds` alternated runs (each a fresh process,
    best of `repeats`), its speed-up over fp32 and its PNG's error against fp32's."""
    rows = []
    for size in sizes:
        runs: dict[str, list] = {p: [] for p in bundles}
        for _ in range(rounds):
            for precision, bundle in bundles.items():
                image = folder / f"{precision}-{size_name(size)}.png"
                runs[precision].append(in_subprocess({
                    "kind": "runtime", "bundle": str(bundle), "backend": backend, "size": list(size),
                    "repeats": repeats, "image": str(image),
                    "precision": precision if backend != "tensorrt" else None}))
        reference = read_png(folder / f"fp32-{size_name(size)}.png")
        fp32 = min(r["seconds"] for r in runs["fp32"])
        for precision, results in runs.items():
            best = min(results, key=lambda r: r["seconds"])
            rows.append({"size": size_name(size), "precision": precision, "ran": best["precision"],
                         "seconds": best["seconds"], "stages": best["stages"], "speedup": fp32 / best["seconds"],
                         "load": [r["load_before"] for r in results],
                         **uint8_error(reference, read_png(folder / f"{precision}-{size_name(size)}.png"))})
        log.info("measured precisions at %s", size_name(size))
    return rows


def measure(bundle: Path, backend: str, model: dict, config: dict, sizes, threads: int, with_torch: bool) -> dict:
    rows = []
    for size in sizes:
        cost = flops(model, *size)
        repeats = 3 if size[0] * size[1] <= 1 << 20 else 1
        job = {"kind": "runtime", "bundle": str(bundle), "backend": backend, "size": list(size), "repeats": repeats}
        result = in_subprocess(job)
        row = {"size": size_name(size), "gflop": cost["total"] / 1e9, "runtime": result,
               "gflops": cost["total"] / result["seconds"] / 1e9,
               "lines_gflops": cost["lines"] / result["stages"]["lines"] / 1e9,
               "pixels_gflops": cost["pixels"] / result["stages"]["pixels"] / 1e9}
        if not with_torch:
            row["torch_skipped"] = "not run (--no-torch)"
        elif not torch_fits(model, *size):
            row["torch_skipped"] = "does not fit in memory"
        else:  # the baseline's best: all cores, or one (less contention on a shared machine)
            torch_repeats = 2 if size[0] * size[1] <= 512 * 512 else 1
            runs = [in_subprocess({"kind": "torch", "config": config, "size": list(size), "repeats": torch_repeats,
                                   "threads": n}) for n in sorted({threads, 1})]
            row["torch"] = {**min(runs, key=lambda r: r["seconds"]), "seconds_by_threads":
                            {n: r["seconds"] for n, r in zip(sorted({threads, 1}), runs)}}
        rows.append(row)
        log.info("measured %s", row["size"])
    return {"rows": rows}


def measure_overhead(bundle: Path, backend: str, sizes) -> list[dict]:
    """Default tile and line chunk vs the whole image as one lines call and one pixels call."""
    out = []
    for size in sizes:
        job = {"kind": "runtime", "bundle": str(bundle), "backend": backend, "size": list(size), "repeats": 3}
        default = in_subprocess(job)
        whole = in_subprocess({**job, "tile": list(size), "line_chunk": sum(size), "one_call": True})
        out.append({"size": size_name(size), "default_seconds": default["seconds"], "default_tile": default["tile"],
                    "one_tile_seconds": whole["seconds"], "overhead": default["seconds"] / whole["seconds"] - 1})
    return out


def table(report: dict) -> str:
    """The report as text; the ceiling column only where a ceiling was measured on the backend's device."""
    ceiling = report["gemm_ceiling_gflops"]
    lines = [f"backend {report['backend']} on {report['device']}",
             f"GEMM ceiling ({report['gemm_ceiling']}): {ceiling:.0f} GFLOP/s" if ceiling
             else f"no GEMM ceiling: {report['gemm_ceiling']}",
             f"{'size':>10} {'GFLOP':>7} {'time s':>8} {'GFLOP/s':>8} " + (f"{'ceiling':>8} " if ceiling else "")
             + f"{'lines s':>8} {'pixels s':>8} {'RSS MB':>7} {'torch CPU s':>11} {'speedup':>8} {'torch MB':>8}"]
    for row in report["rows"]:
        rt, pt = row["runtime"], row.get("torch")
        lines.append(
            f"{row['size']:>10} {row['gflop']:7.1f} {rt['seconds']:8.3f} {row['gflops']:8.1f} "
            + (f"{row['gflops'] / ceiling:8.0%} " if ceiling else "")
            + f"{rt['stages']['lines']:8.3f} {rt['stages']['pixels']:8.3f} {rt['peak_rss'] / 1e6:7.0f} "
            + (f"{pt['seconds']:11.2f} {pt['seconds'] / rt['seconds']:7.1f}x {pt['peak_rss'] / 1e6:8.0f}" if pt
               else f"  ({row['torch_skipped']})"))
    for o in report["tiling_overhead"]:
        lines.append(f"tiling overhead at {o['size']}: default tile {o['default_tile']} {o['default_seconds']:.3f} s "
                     f"vs one tile {o['one_tile_seconds']:.3f} s: {o['overhead']:+.1%}")
    if "tiling_overhead_skipped" in report:
        lines.append(f"tiling overhead {report['tiling_overhead_skipped']}")
    if report.get("precision_rows"):
        lines.append(f"precision column ({report['backend']}; error of each PNG against the fp32 runtime's):")
        lines.append(f"{'precision':>9} {'size':>10} {'time s':>8} {'speedup':>8} {'uint8 PSNR':>10} {'max abs':>7} "
                     f"{'changed':>8}")
        for row in report["precision_rows"]:
            psnr = "exact" if row["uint8_psnr_db"] is None else f"{row['uint8_psnr_db']:.2f}"
            lines.append(f"{row['precision']:>9} {row['size']:>10} {row['seconds']:8.3f} {row['speedup']:7.2f}x "
                         f"{psnr:>10} {row['uint8_max_abs']:7d} {row['pixels_changed']:8.1%}")
    for precision, why in report.get("precisions_skipped", {}).items():
        lines.append(f"{precision} not measured: {why}")
    lines.append(f"peak RSS (host) {report['rss_ratio']['large']} / {report['rss_ratio']['small']}: "
                 f"{report['rss_ratio']['ratio']:.2f}")
    for target in report.get("targets", []):
        lines.append(f"target {target['name']}: {target['value']:.3g} (want {target['want']}) "
                     f"{'met' if target['met'] else 'NOT met'}")
    return "\n".join(lines)


def targets(report: dict) -> list[dict]:
    """Issue 5's targets with the values this run measured."""
    rows = {row["size"]: row for row in report["rows"]}
    ceiling = report["gemm_ceiling_gflops"]
    speedup = ORIGINAL_512_SECONDS / rows["512x512"]["runtime"]["seconds"]
    found = [(f"speedup over the original at 512x512 ({ORIGINAL_512_SECONDS} s)", speedup, ">= 5 (aim 7)",
              lambda v: v >= 5)]
    for size in ("512x512", "2048x512"):
        found.append((f"fraction of the GEMM ceiling at {size}", rows[size]["gflops"] / ceiling, ">= 0.7",
                      lambda v: v >= 0.7))
    found.append(("peak RSS 8192x2048 / 1024x256", report["rss_ratio"]["ratio"], "<= 2", lambda v: v <= 2))
    for o in report["tiling_overhead"]:
        found.append((f"tiling overhead at {o['size']}", o["overhead"], "<= 0.05", lambda v: v <= 0.05))
    return [{"name": name, "value": value, "want": want, "met": bool(ok(value))} for name, value, want, ok in found]


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    names = [r["size"] for r in rows]
    x = np.arange(len(rows))
    fig, (ax_time, ax_eff, ax_rss) = plt.subplots(1, 3, figsize=(15, 4.5))
    runtime_s = [r["runtime"]["seconds"] for r in rows]
    torch_s = [r["torch"]["seconds"] if "torch" in r else np.nan for r in rows]
    ax_time.bar(x - 0.2, runtime_s, 0.4, label=f"creps-run ({report['backend']})")
    ax_time.bar(x + 0.2, torch_s, 0.4, label="PyTorch eager on the CPU (project model)")
    ax_time.set(yscale="log", ylabel="seconds per image", xticks=x, xticklabels=names, title="time")
    ax_time.legend(fontsize=8, loc="upper left")
    ax_eff.bar(x - 0.25, [r["gflops"] for r in rows], 0.25, label="end to end")
    ax_eff.bar(x, [r["lines_gflops"] for r in rows], 0.25, label="lines stage")
    ax_eff.bar(x + 0.25, [r["pixels_gflops"] for r in rows], 0.25, label="pixels stage")
    ceiling = report["gemm_ceiling_gflops"]
    if ceiling:
        ax_eff.axhline(ceiling, color="k", linestyle="--", label=f"GEMM ceiling {ceiling:.0f}")
    ax_eff.set(ylabel="GFLOP/s", xticks=x, xticklabels=names, title="achieved float32 GFLOP/s")
    ax_eff.legend(fontsize=7, loc="lower right")
    ax_rss.bar(x, [r["runtime"]["peak_rss"] / 1e6 for r in rows], 0.5)
    ax_rss.set(ylabel="MB", xticks=x, xticklabels=names, title="peak host RSS (streamed PNG)")
    cores = f" x{report['threads']}" if report["backend"] == "ort-cpu" else ""
    fig.suptitle(f"creps runtime, {report['config']}, {report['backend']} on {report['device']}{cores}")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


# ---- where a benchmark writes, and the machine its record names -----------------------------

SCRATCH = Path("creps-bench-out")  # in the working directory: a run's figures, never the committed record
CHECKOUT_RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
# What decides a float32/bfloat16 GEMM's speed (x86 /proc/cpuinfo 'flags', Arm 'Features').
GEMM_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "asimd", "bf16")
BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # bfloat16 arithmetic in hardware; without one it is emulated


def output_folder(out: Path | None, record: bool, results: Path) -> Path:
    """Where a benchmark writes: --out, or with --record the committed records of the checkout
    it runs from (`results`; refused elsewhere), else ./creps-bench-out/. Checked before any
    work, so a refusal costs nothing."""
    if not record:
        if out is not None and out.resolve() == results.resolve():
            raise click.UsageError(f"{out} holds the committed records: update them with --record")
        return SCRATCH if out is None else out
    if out is not None:
        raise click.UsageError("give --out or --record, not both")
    if not results.is_dir():
        raise click.UsageError(f"--record updates benchmarks/results/ of a creps checkout, and {results.parents[1]} "
                               "is not one: write elsewhere with --out")
    return results


def has_bf16() -> bool:
    return bool(cpu()[1] & BF16_FLAGS)


def machine() -> dict:
    """A record's description of where it was measured: CPU model, the flags that decide GEMM
    speed, CPUs, the threads in use (PyTorch's where the benchmark imported it)."""
    from creps.runtime.backends import available_cores

    model, flags = cpu()
    torch = sys.modules.get("torch")
    return {"cpu": model, "flags": [f for f in GEMM_FLAGS if f in flags], "bf16_instructions": has_bf16(),
            "cpus": os.cpu_count(), "usable_cpus": available_cores(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "torch_threads": torch.get_num_threads() if torch else None, "platform": platform.platform()}


class Run:
    """One benchmark run, from its start: the record's machine, load averages, start and length."""

    def __init__(self):
        self.clock, self.started, self.load = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S%z"), os.getloadavg()

    def record(self) -> dict:
        return {"machine": {**machine(), "load_average_start": self.load, "load_average_end": os.getloadavg()},
                "started": self.started, "seconds": round(time.perf_counter() - self.clock, 1)}


def save_json(path: Path, report: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")


@command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"Folder for runtime.json and runtime.png (runtime-BACKEND.* for a GPU backend) "
                   f"[default: ./{SCRATCH}/].")
@click.option("--record", is_flag=True,
              help="Update the committed record in benchmarks/results/ of the checkout creps runs from.")
@click.option("--backend", type=click.Choice(BENCH_BACKENDS), default="ort-cpu", show_default=True,
              help="What creps-run runs on; tensorrt builds fp32 engines for the benchmarked sizes first.")
@click.option("--quick", is_flag=True, help="A tiny config at small sizes: checks the script, measures nothing.")
@click.option("--torch/--no-torch", "with_torch", default=True, show_default=True,
              help="Also time the project's PyTorch model (eager, on the CPU).")
@click.option("--precisions", default="all", show_default=True,
              help="The precision column: fp32,fp16,int8 or all (those the backend runs: fp32 and int8 on ort-cpu, "
                   "also fp16 on ort-cuda and tensorrt); fp32 alone skips the calibration (minutes).")
def cli(out, record, backend, quick, with_torch, precisions):
    """Benchmark creps-run at the published 256 config (random weights): time, peak host RSS,
    GFLOP/s against the GEMM ceiling of the backend's device (ort-cpu and ort-cuda),
    line/pixel split, tiling overhead, PyTorch eager on the CPU. Issue 5's targets are
    judged for ort-cpu only. A backend that cannot run here stops it before the export.
    Takes about 7 min on 2 cores (--quick: about 1 min).

    \b
    Example:
      creps-bench                      # writes ./creps-bench-out/runtime.json and .png
      creps-bench --record             # the same into the checkout's benchmarks/results/
      creps-bench --backend tensorrt   # on a GPU: builds engines, writes runtime-tensorrt.*
      creps-bench --quick --out /tmp/bench
      creps-bench --precisions fp32     # no precision column (no calibration)
    """
    from creps.runtime.backends import available_cores

    if quick and record:
        raise click.UsageError("--quick measures nothing, so it never updates the committed record: drop --record")
    out = output_folder(out, record, CHECKOUT_RESULTS)
    threads = available_cores()
    precisions, skipped = precisions_of(backend, precisions)
    device = backend_device(backend, threads)
    config = QUICK_CONFIG if quick else {}
    sizes = ((64, 64), (96, 32)) if quick else SIZES
    rss_sizes = ((64, 16), (256, 64)) if quick else (RSS_SMALL, RSS_LARGE)
    with tempfile.TemporaryDirectory() as folder:
        click.echo("exporting the benchmark model ...", err=True)
        bundle, model = export_model(config, Path(folder))
        if len(precisions) > 1:
            click.echo(f"creps-calib: {' and '.join(precisions[1:])} graphs ...", err=True)
        calibrated = add_precision_graphs(bundle, config, precisions, QUICK_CALIB if quick else {})
        if backend == "tensorrt":
            click.echo("building TensorRT engines ...", err=True)
            build_engines(bundle, dict.fromkeys(sizes + rss_sizes + PRECISION_SIZES))
        bundles = precision_bundles(bundle, backend, precisions, Path(folder))
        run = Run()  # the measurements' load and length, not the export's
        gemm = dict(n=256, rows=1024) if quick else {}
        ceiling = gemm_ceiling(threads, backend=backend, **gemm) if backend in ORT_DEVICES else None
        report = {"config": "quick" if quick else "published 256 (random weights)", "model": model,
                  "backend": backend, "device": device, "threads": threads, "gemm_ceiling_gflops": ceiling,
                  "gemm_ceiling": (f"ONNX Runtime MatMul on {ORT_PROVIDERS[backend]}, "
                                   + (f"{threads} threads" if backend == "ort-cpu" else "data on the GPU"))
                  if ceiling else NO_CEILING,
                  "peak_rss": "host memory of the measuring process; device memory is not measured",
                  **measure(bundle, backend, model, config, sizes, threads, with_torch)}
        rss = {row["size"]: row["runtime"] for row in report["rows"]}  # each row ran in a fresh process
        for size in rss_sizes:
            if size_name(size) not in rss:
                rss[size_name(size)] = in_subprocess({"kind": "runtime", "bundle": str(bundle), "backend": backend,
                                                      "size": list(size), "repeats": 1})
        small, large = (size_name(s) for s in rss_sizes)
        report["rss_ratio"] = {"small": small, "large": large, "small_bytes": rss[small]["peak_rss"],
                               "large_bytes": rss[large]["peak_rss"],
                               "ratio": rss[large]["peak_rss"] / rss[small]["peak_rss"]}
        if backend == "tensorrt":
            report["tiling_overhead"], report["tiling_overhead_skipped"] = [], NO_ONE_TILE
        else:
            report["tiling_overhead"] = measure_overhead(bundle, backend, sizes[:1] if quick else OVERHEAD_SIZES)
        report["precision_rows"] = measure_precisions(bundles, backend, sizes[:2] if quick else PRECISION_SIZES,
                                                      Path(folder))
        report["precisions_skipped"], report["calibration_error"] = skipped, calibrated
        report["gemm_ceiling_end_gflops"] = gemm_ceiling(threads, backend=backend, **gemm) if ceiling else None
        report.update(run.record())
    if not quick and backend == "ort-cpu":
        report["targets"] = targets(report)
    write_report(report, out)


def write_report(report: dict, out: Path) -> None:
    """runtime.json/.png for ort-cpu, runtime-BACKEND.json/.png for another backend."""
    stem = "runtime" if report["backend"] == "ort-cpu" else f"runtime-{report['backend']}"
    save_json(out / f"{stem}.json", report)
    with atomic_path(out / f"{stem}.png") as tmp:
        plot(report, tmp)
    click.echo(table(report))
    click.echo(f"wrote {out / stem}.json and {out / stem}.png")


main = entry_point(cli)
