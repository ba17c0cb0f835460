"""INT8 Q/DQ graphs against the FP32 runtime on ONNX Runtime CPU: error, speed, and what runs in integers.

For each model (the bundled 64x64 default model; the published 256 configuration with
random weights, its image layers scaled to a trained model's spread, std 0.5, as
benchmarks/precision.py makes it: with creps-bench's plain random init 99.7% of its
uint8 pixels are 0 or 255, so any error hides) the FP32 bundle is exported, then
creps-calib's INT8 search runs once (calib/sensitivity.py: per-layer range method among
--methods and SmoothQuant strength, the layers in order of error per multiply-add, the
curve; weights --weight-bits wide, by default as creps-calib picks them here; INT8 only in
the stages --int8-stages names, by default as creps-calib: those whose planned INT8 graph
runs faster here, calib/speed.py). Points of the
curve (every layer INT8, and the plans for each --targets value) are written as Q/DQ
graphs and run through the runtime (creps.runtime.Runtime with OrtBackend, the same
session options and threads as FP32: a copy of the bundle whose manifest names the INT8
files as its line and pixel graphs), alternating with the FP32 runtime in the same
process. Errors are of uint8 images against the FP32 runtime's (PSNR peak 255, max abs
in levels, share of pixels changed), worst over --seeds (seeds 0 and 1 are the
calibration's; the others are held out) at psi 1 and 0.7. ONNX Runtime's optimized
graphs (SessionOptions.optimized_model_filepath) say which layers became integer kernels.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import click
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from common import benchmark  # noqa: E402
from tiny_models import random_generator  # noqa: E402

from creps.bench import StageTimer, cpu, timed, uint8_error  # noqa: E402
from creps.calib import int8, sensitivity  # noqa: E402
from creps.calib.cli import parse_stages  # noqa: E402
from creps.calib.bundle import activation_form_models, load_models  # noqa: E402
from creps.calib.samples import Job  # noqa: E402
from creps.cli import SEEDS, entry_point  # noqa: E402
from creps.export import export_bundle  # noqa: E402
from creps.model import GeneratorConfig  # noqa: E402
from creps.runtime import Runtime, read_bundle  # noqa: E402
from creps.runtime.backends import OrtBackend  # noqa: E402
from creps.runtime.bundle import file_entry, write_manifest  # noqa: E402
from creps.runtime.cpu import exact_weight_bits  # noqa: E402
from creps.runtime.default import default_checkpoint  # noqa: E402
from creps.runtime.stages import graph_key  # noqa: E402

SIZES = ((512, 512), (2048, 512))
PSIS = (1.0, 0.7)
INTEGER_KERNELS = {"MatMulIntegerToFloat", "QLinearMatMul", "MatMulInteger", "QGemm", "DynamicQuantizeMatMul",
                   "DynamicQuantizeLinear", "QLinearConv", "ConvInteger"}
FLOAT_LAYERS = {"MatMul", "Gemm", "FusedGemm", "FusedMatMul", "MatMulNBits"}


def model(name: str):
    from creps.checkpoint import load_generator

    if name == "default":
        return load_generator(default_checkpoint())
    return random_generator(GeneratorConfig(), seed=0, output_std=0.5)


def int8_view(bundle: Path, graphs: dict[str, onnx.ModelProto], folder: Path) -> Path:
    """A copy of `bundle` whose line and pixel graphs are `graphs` (so OrtBackend runs them as it runs FP32)."""
    shutil.copytree(bundle, folder)
    manifest = read_bundle(folder).manifest
    for stage, graph in graphs.items():
        onnx.save(graph, folder / f"{stage}.int8.onnx")
        manifest["graphs"][graph_key(stage)] = {**manifest["graphs"][stage],
                                                **file_entry(folder, f"{stage}.int8.onnx", "fp32")}
    write_manifest(folder, manifest)
    return folder


def kernels(graphs: dict[str, onnx.ModelProto], folder: Path) -> dict:
    """Per stage, the op census of ONNX Runtime's optimized graph as OrtBackend builds it, and which
    layers run in integers and which in float."""
    import onnxruntime as ort

    out = {}
    for stage, graph in graphs.items():
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(folder / f"{stage}.optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
        nodes = onnx.load(options.optimized_model_filepath).graph.node
        out[stage] = {"ops": dict(collections.Counter(n.op_type for n in nodes)),
                      "integer": sorted(f"{n.op_type}:{n.name}" for n in nodes if n.op_type in INTEGER_KERNELS
                                        and n.op_type != "DynamicQuantizeLinear"),
                      "float": sorted(f"{n.op_type}:{n.name}" for n in nodes if n.op_type in FLOAT_LAYERS)}
    return out


def worst_of(errors: list[dict]) -> dict:
    return {"uint8_psnr_db": min(e["uint8_psnr_db"] or math.inf for e in errors),
            "uint8_max_abs": max(e["uint8_max_abs"] for e in errors),
            "pixels_changed": max(e["pixels_changed"] for e in errors)}


def timed_stages(runtime: Runtime, size) -> tuple[float, dict]:
    runtime.backend.spans = {}
    seconds = timed(lambda: runtime.generate(0, size))
    return seconds, runtime.backend.seconds()


def measure_point(fp32: Runtime, view: Path, seeds, calibration_seeds: set[int], threads: int, repeats: int) -> dict:
    """Per size: worst error over seeds x PSIS (and over the held-out seeds alone), and the best of
    `repeats` alternated runs of each runtime with its stage times."""
    rows = []
    with Runtime(view, backend=StageTimer(OrtBackend(read_bundle(view), threads))) as quantized:
        quantized.generate(0, (64, 64))  # sessions and arenas warm
        for size in SIZES:
            errors = [{"seed": seed, "psi": psi,
                       **uint8_error(fp32.generate(seed, size, psi)[0], quantized.generate(seed, size, psi)[0])}
                      for seed in seeds for psi in PSIS]
            held_out = [e for e in errors if e["seed"] not in calibration_seeds]
            runs = {"fp32": [], "int8": []}
            for _ in range(repeats):  # alternated, so load changes hit both alike
                runs["fp32"].append(timed_stages(fp32, size))
                runs["int8"].append(timed_stages(quantized, size))
            best = {p: min(r, key=lambda run: run[0]) for p, r in runs.items()}
            rows.append({"size": f"{size[0]}x{size[1]}", **worst_of(errors),
                         "held_out": worst_of(held_out) if held_out else None, "per_job": errors,
                         "fp32_seconds": best["fp32"][0], "int8_seconds": best["int8"][0],
                         "fp32_stages": best["fp32"][1], "int8_stages": best["int8"][1],
                         "all_seconds": {p: [round(t, 4) for t, _ in r] for p, r in runs.items()},
                         "speedup": best["fp32"][0] / best["int8"][0], "load_average": os.getloadavg()})
    return {"sizes": rows}


def run_model(name: str, targets, seeds, threads: int, repeats: int, probe: int, weight_bits: int,
              methods: tuple[str, ...], stages: tuple[str, ...] | None) -> dict:
    G = model(name)
    jobs = (Job(0, 1.0, 512, 512), Job(1, 0.7, 2048, 512))  # creps-calib's default jobs
    with tempfile.TemporaryDirectory() as tmp:
        bundle = export_bundle(G, Path(tmp) / "bundle", verify=False, progress=True)
        activation = activation_form_models(read_bundle(bundle), G)
        exported = load_models(read_bundle(bundle))
        start = time.perf_counter()
        searched = sensitivity.search(activation, jobs, int8.range_jobs(jobs), probe, weight_bits,
                                      int8.plan_jobs(jobs), methods, stages or int8.INT8_STAGES)
        search_seconds = time.perf_counter() - start
        # Each point: (its search, k, its graphs, stage timings); the targets settle as creps-calib does
        # (auto: with timing).
        every = len(searched.order)
        points = {"every layer int8": (searched, every, searched.graphs(every), None)}
        points.update({f"target {t:g} dB": searched.settle(t, exported if stages is None else None, jobs[0])
                       for t in targets})
        results = {}
        with Runtime(bundle, backend=StageTimer(OrtBackend(read_bundle(bundle), threads))) as fp32:
            fp32.generate(0, (64, 64))
            for label, (found, k, graphs, timings) in points.items():
                graphs = int8.with_float_stages(graphs, exported)
                view = int8_view(bundle, graphs, Path(tmp) / f"int8-{len(results)}")
                results[label] = {"int8_layers": k,
                                  "float_layers": [f"{s}/{n}" for s, n in found.order[k:] + found.excluded],
                                  "int8_stages": sorted({s for s, _ in found.order[:k]}), "stage_speed": timings,
                                  "curve": found.curve if found is not searched else None,
                                  "kernels": kernels(graphs, view),
                                  **measure_point(fp32, view, seeds, {j.seed for j in jobs}, threads, repeats)}
                log_point(name, label, results[label])
    return {"search_seconds": search_seconds, "options_tried": searched.tried, "sensitivity": searched.table,
            "curve": searched.curve, "points": results}


def log_point(model_name: str, label: str, point: dict) -> None:
    for row in point["sizes"]:
        click.echo(f"{model_name:8s} {label:18s} {point['int8_layers']:3d} int8 layers {row['size']:>9s}: "
                   f"uint8 PSNR {row['uint8_psnr_db']} dB (held-out seeds "
                   f"{row['held_out']['uint8_psnr_db'] if row['held_out'] else '-'}), max abs {row['uint8_max_abs']}, "
                   f"changed {100 * row['pixels_changed']:.1f}%, fp32 {row['fp32_seconds']:.3f} s, "
                   f"int8 {row['int8_seconds']:.3f} s, x{row['speedup']:.2f}")
    for stage, k in point["kernels"].items():
        click.echo(f"  {stage}: {len(k['integer'])} layers in integer kernels, {len(k['float'])} in float")


@benchmark("int8", __doc__, takes="about 10 min (default model) to 40 min (both) on a busy 2-core machine")
@click.option("--models", default="default,published", show_default=True, help="Models, comma-separated.")
@click.option("--targets", default="40,45,48", show_default=True, help="--target-psnr values whose plans are run.")
@click.option("--seeds", type=SEEDS, default="0-3", show_default=True, help="Seeds of the error images.")
@click.option("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores).")
@click.option("--repeats", type=int, default=3, show_default=True, help="Timed runs per size and precision.")
@click.option("--probe", type=int, default=int8.CALIBRATION_PROBE, show_default=True,
              help="Rows and columns per job of the search.")
@click.option("--weight-bits", type=click.Choice(["auto", "7", "8"]), default="auto", show_default=True,
              help="The weights' width (auto: 8 where this CPU's integer kernels run it exactly, as creps-calib).")
@click.option("--methods", default=",".join(sensitivity.SEARCH_METHODS), show_default=True,
              help=f"Activation range methods each layer picks from ({', '.join(int8.METHODS)}).")
@click.option("--int8-stages", default="auto", show_default=True,
              help="Stages whose layers may be INT8 (lines, pixels, or both, comma-separated); auto: as creps-calib, "
                   "those whose INT8 graph runs faster here.")
def main(models, targets, seeds, threads, repeats, probe, weight_bits, methods, int8_stages) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    for noisy in ("onnx_ir", "onnxscript", "root"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    targets = [float(t) for t in targets.split(",") if t]
    weight_bits = exact_weight_bits() if weight_bits == "auto" else int(weight_bits)
    methods = tuple(m for m in methods.split(",") if m)
    stages = None if int8_stages == "auto" else parse_stages(int8_stages)
    unknown = sorted(set(methods) - set(int8.METHODS))
    if unknown or not methods:
        raise click.BadParameter(f"{','.join(unknown) or 'nothing'}: choose from {', '.join(int8.METHODS)}",
                                 param_hint="--methods")
    cpu_model, flags = cpu()
    report = {"cpu": cpu_model, "cpu_flags": sorted(f for f in flags if f.startswith("avx") or "vnni" in f
                                                    or f in ("fma", "f16c", "amx_int8")),
              "threads": threads or "all cores", "seeds": seeds, "psis": list(PSIS), "weight_bits": weight_bits,
              "methods": list(methods),
              "error": "uint8 images of the INT8 runtime against the FP32 runtime's: PSNR peak 255, max abs in "
                       "levels, share of pixels changed; worst over seeds x psis", "models": {}}
    for name in models.split(","):
        report["models"][name] = run_model(name, targets, seeds, threads, repeats, probe, weight_bits, methods,
                                           stages)
    click.echo(json.dumps({m: {p: [(r["size"], r["uint8_psnr_db"], round(r["speedup"], 2)) for r in v["sizes"]]
                               for p, v in d["points"].items()} for m, d in report["models"].items()}))
    return report


if __name__ == "__main__":
    entry_point(main)()
