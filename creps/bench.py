"""creps-bench: the runtime's speed, memory and efficiency at the published 256 config, in one run.

The published config (random weights) is exported once into a temporary bundle. Each
measurement runs in a fresh subprocess, so its peak RSS is its own: the runtime writes a
streamed PNG as `creps-run` does (ONNX Runtime CPU, all cores), and the project's PyTorch
model (eager; the better of all cores and one thread) generates the same size where it
fits in memory. Arithmetic comes from
the cost formulas of CREPS_MODEL.md (multiply-adds x 2 = FLOP) and is set against the
machine's float32 GEMM ceiling, a large MatMul through ONNX Runtime measured in the same
run. Also measured: tiling overhead (default tile and line chunk vs one tile and one
chunk) and the peak-RSS ratio of 8192x2048 to 1024x256. Writes a table, JSON and a plot.
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

from creps.cli import entry_point

log = logging.getLogger(__name__)

SIZES = ((256, 256), (512, 512), (2048, 512), (8192, 2048))
RSS_SMALL, RSS_LARGE = (1024, 256), (8192, 2048)
OVERHEAD_SIZES = ((512, 512), (2048, 512))
ORIGINAL_512_SECONDS = 5.5  # the original code, eager PyTorch, 512x512 on this machine (issue 5)
QUICK_CONFIG = dict(z_dim=64, w_dim=64, img_resolution=32, mapping_layers=2, channel_base=2048, channel_max=64)
WORKER = "from creps.bench import worker; worker()"


# ---- arithmetic (CREPS_MODEL.md): multiply-adds per line slot and per pixel ----------------

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


def gemm_ceiling(threads: int, n: int = 2048, rows: int = 4096, repeats: int = 5) -> float:
    """float32 GFLOP/s of one large MatMul through ONNX Runtime (best of `repeats`)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((n, n), np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, n])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = rng.standard_normal((rows, n), np.float32)
    session.run(None, {"x": x})
    best = min(timed(lambda: session.run(None, {"x": x})) for _ in range(repeats))
    return 2 * rows * n * n / best / 1e9


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class StageTimer:
    """Wraps a backend and records each stage's wall-clock span (first call start to last
    call end: concurrent calls are not counted twice; the stages run one after another)."""

    def __init__(self, backend):
        self.backend, self.name, self.spans = backend, backend.name, {}

    def run(self, stage, feeds):
        start = time.perf_counter()
        out = self.backend.run(stage, feeds)
        first, _ = self.spans.get(stage, (start, 0.0))
        self.spans[stage] = (min(first, start), time.perf_counter())
        return out

    def shape_range(self, stage, input):
        return self.backend.shape_range(stage, input)

    def parallel(self, stage):
        return self.backend.parallel(stage)

    def seconds(self) -> dict:
        return {stage: end - start for stage, (start, end) in self.spans.items()}


def run_runtime(job: dict) -> dict:
    from creps.runtime import Runtime, read_bundle
    from creps.runtime.backends import OrtBackend

    size = tuple(job["size"])
    # The whole image in one call uses every core inside that call (a fair untiled baseline).
    backend = OrtBackend(read_bundle(job["bundle"]), concurrent=False) if job.get("one_call") else "ort-cpu"
    runtime = Runtime(job["bundle"], backend=backend, tile=job.get("tile"), line_chunk=job.get("line_chunk"))
    runtime.generate(0, (64, 64))  # sessions and arenas warm
    timer = runtime.backend = StageTimer(runtime.backend)
    best = None
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(job["repeats"]):
            timer.spans = {}
            seconds = timed(lambda: runtime.save([Path(folder) / "bench.png"], 0, size))
            if best is None or seconds < best["seconds"]:
                best = {"seconds": seconds, "stages": timer.seconds()}
    plan = runtime.plan(size)
    return {**best, "peak_rss": peak_rss(), "tile": list(plan.tile), "tiles": len(plan.bands) * len(plan.columns),
            "line_chunks": len(plan.line_chunks)}


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

def export_model(config: dict, folder: Path) -> tuple[Path, dict]:
    import torch

    from creps.export import export_bundle
    from creps.model import Generator, GeneratorConfig

    torch.manual_seed(0)
    G = Generator(GeneratorConfig(**config)).eval()
    bundle = export_bundle(G, folder / "bundle", verify=False)
    return bundle, json.loads((bundle / "manifest.json").read_text())["model"]


def size_name(size) -> str:
    return f"{size[0]}x{size[1]}"


def measure(bundle: Path, model: dict, config: dict, sizes, threads: int, with_torch: bool) -> dict:
    rows = []
    for size in sizes:
        cost = flops(model, *size)
        repeats = 3 if size[0] * size[1] <= 1 << 20 else 1
        job = {"kind": "runtime", "bundle": str(bundle), "size": list(size), "repeats": repeats}
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
            runs = [in_subprocess({"kind": "torch", "config": config, "size": list(size), "repeats": 1,
                                   "threads": n}) for n in sorted({threads, 1})]
            row["torch"] = {**min(runs, key=lambda r: r["seconds"]), "seconds_by_threads":
                            {n: r["seconds"] for n, r in zip(sorted({threads, 1}), runs)}}
        rows.append(row)
        log.info("measured %s", row["size"])
    return {"rows": rows}


def measure_overhead(bundle: Path, sizes) -> list[dict]:
    """Default tile and line chunk vs the whole image as one lines call and one pixels call."""
    out = []
    for size in sizes:
        default = in_subprocess({"kind": "runtime", "bundle": str(bundle), "size": list(size), "repeats": 3})
        whole = in_subprocess({"kind": "runtime", "bundle": str(bundle), "size": list(size), "repeats": 3,
                               "tile": list(size), "line_chunk": sum(size), "one_call": True})
        out.append({"size": size_name(size), "default_seconds": default["seconds"], "default_tile": default["tile"],
                    "one_tile_seconds": whole["seconds"], "overhead": default["seconds"] / whole["seconds"] - 1})
    return out


def table(report: dict) -> str:
    ceiling = report["gemm_ceiling_gflops"]
    lines = [f"GEMM ceiling (ONNX Runtime MatMul, {report['threads']} threads): {ceiling:.0f} GFLOP/s",
             f"{'size':>10} {'GFLOP':>7} {'time s':>8} {'GFLOP/s':>8} {'ceiling':>8} {'lines s':>8} "
             f"{'pixels s':>8} {'RSS MB':>7} {'torch s':>8} {'speedup':>8} {'torch MB':>8}"]
    for row in report["rows"]:
        rt, pt = row["runtime"], row.get("torch")
        lines.append(
            f"{row['size']:>10} {row['gflop']:7.1f} {rt['seconds']:8.3f} {row['gflops']:8.1f} "
            f"{row['gflops'] / ceiling:8.0%} {rt['stages']['lines']:8.3f} {rt['stages']['pixels']:8.3f} "
            f"{rt['peak_rss'] / 1e6:7.0f} "
            + (f"{pt['seconds']:8.2f} {pt['seconds'] / rt['seconds']:7.1f}x {pt['peak_rss'] / 1e6:8.0f}" if pt
               else f"  ({row['torch_skipped']})"))
    for o in report["tiling_overhead"]:
        lines.append(f"tiling overhead at {o['size']}: default tile {o['default_tile']} {o['default_seconds']:.3f} s "
                     f"vs one tile {o['one_tile_seconds']:.3f} s: {o['overhead']:+.1%}")
    lines.append(f"peak RSS {report['rss_ratio']['large']} / {report['rss_ratio']['small']}: "
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
    ax_time.bar(x - 0.2, runtime_s, 0.4, label="creps-run (ONNX Runtime CPU)")
    ax_time.bar(x + 0.2, torch_s, 0.4, label="PyTorch eager (project model)")
    ax_time.set(yscale="log", ylabel="seconds per image", xticks=x, xticklabels=names, title="time")
    ax_time.legend(fontsize=8, loc="upper left")
    ceiling = report["gemm_ceiling_gflops"]
    ax_eff.bar(x - 0.25, [r["gflops"] for r in rows], 0.25, label="end to end")
    ax_eff.bar(x, [r["lines_gflops"] for r in rows], 0.25, label="lines stage")
    ax_eff.bar(x + 0.25, [r["pixels_gflops"] for r in rows], 0.25, label="pixels stage")
    ax_eff.axhline(ceiling, color="k", linestyle="--", label=f"GEMM ceiling {ceiling:.0f}")
    ax_eff.set(ylabel="GFLOP/s", xticks=x, xticklabels=names, title="achieved float32 GFLOP/s")
    ax_eff.legend(fontsize=7, loc="lower right")
    ax_rss.bar(x, [r["runtime"]["peak_rss"] / 1e6 for r in rows], 0.5)
    ax_rss.set(ylabel="MB", xticks=x, xticklabels=names, title="peak RSS (streamed PNG)")
    fig.suptitle(f"creps runtime, {report['config']}, {report['machine']['cpu']} x{report['threads']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cpu_name() -> str:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                    platform.processor())


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("benchmarks/results"),
              show_default=True, help="Folder for runtime.json and runtime.png.")
@click.option("--quick", is_flag=True, help="A tiny config at small sizes: checks the script, measures nothing.")
@click.option("--torch/--no-torch", "with_torch", default=True, show_default=True,
              help="Also time the project's PyTorch model (eager).")
def cli(out, quick, with_torch):
    """Benchmark creps-run at the published 256 config (random weights): time, peak RSS,
    GFLOP/s against the GEMM ceiling, line/pixel split, tiling overhead, PyTorch eager.

    \b
    Example:
      creps-bench                      # a few minutes on 2 cores; writes benchmarks/results/
      creps-bench --quick --out /tmp/bench
    """
    from creps.runtime.backends import available_cores

    config = QUICK_CONFIG if quick else {}
    sizes = ((64, 64), (96, 32)) if quick else SIZES
    rss_sizes = ((64, 16), (256, 64)) if quick else (RSS_SMALL, RSS_LARGE)
    threads = available_cores()
    with tempfile.TemporaryDirectory() as folder:
        click.echo("exporting the benchmark model ...", err=True)
        bundle, model = export_model(config, Path(folder))
        load_start = os.getloadavg()
        ceiling = gemm_ceiling(threads)
        report = {"config": "quick" if quick else "published 256 (random weights)", "model": model,
                  "threads": threads, "gemm_ceiling_gflops": ceiling,
                  "machine": {"cpu": cpu_name(), "cores": threads, "load_average_start": load_start},
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  **measure(bundle, model, config, sizes, threads, with_torch)}
        rss = {row["size"]: row["runtime"] for row in report["rows"]}  # each row ran in a fresh process
        for size in rss_sizes:
            if size_name(size) not in rss:
                rss[size_name(size)] = in_subprocess({"kind": "runtime", "bundle": str(bundle), "size": list(size),
                                                      "repeats": 1})
        small, large = (size_name(s) for s in rss_sizes)
        report["rss_ratio"] = {"small": small, "large": large, "small_bytes": rss[small]["peak_rss"],
                               "large_bytes": rss[large]["peak_rss"],
                               "ratio": rss[large]["peak_rss"] / rss[small]["peak_rss"]}
        report["tiling_overhead"] = measure_overhead(bundle, sizes[:1] if quick else OVERHEAD_SIZES)
        report["machine"]["load_average_end"] = os.getloadavg()
        report["gemm_ceiling_end_gflops"] = gemm_ceiling(threads)
    if not quick:
        report["targets"] = targets(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "runtime.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out / "runtime.png")
    click.echo(table(report))
    click.echo(f"wrote {out / 'runtime.json'} and {out / 'runtime.png'}")


main = entry_point(cli)
