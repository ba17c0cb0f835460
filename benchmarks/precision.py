"""FP16 and INT8 error against FP32 for the published config, and a Jetson-class TensorRT build plan.

Everything here runs on the CPU: FP16 is predicted by emulated rounding in ONNX Runtime
(creps.calib.emulate), INT8 is measured by running the Q/DQ graphs in ONNX Runtime CPU.
No GPU number is produced or claimed.

The generator is the published configuration (GeneratorConfig() defaults) with random
weights, its image layers scaled so images have a trained model's spread (std 0.5;
tests/tiny_models.random_generator), so an absolute error bar means what it means for a
real checkpoint. PSNR = 10 log10(2.0^2 / MSE) on the float image ([-1, 1], peak to peak 2).
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from common import benchmark  # noqa: E402
from tiny_models import random_generator  # noqa: E402

from creps.calib import Job, calibrate_bundle  # noqa: E402
from creps.calib.bars import PRECISION_BARS, shortfalls  # noqa: E402
from creps.calib.bundle import activation_form_models, load_models  # noqa: E402
from creps.calib.samples import StageRunner, compare, worst  # noqa: E402
from creps.cli import entry_point  # noqa: E402
from creps.export import export_bundle  # noqa: E402
from creps.export.trt_plan import build_plan  # noqa: E402
from creps.model import GeneratorConfig  # noqa: E402
from creps.runtime.bundle import read_bundle  # noqa: E402

ANALYSIS_JOBS = (Job(0, 1.0, 512, 512), Job(1, 0.7, 2048, 512))  # the panorama reaches coordinates -1.5..2.5
ERROR_JOBS = (Job(0, 1.0, 512, 512), Job(1, 0.7, 512, 512))
JETSON_BUDGET = 3 << 30  # an 8 GB Orin NX leaves us ~2-4 GB
PROBE = 64  # rows/columns of the cross-checks (the stages are pointwise: a probe is exact where it looks)


def probe_errors(reference: StageRunner, test: StageRunner) -> dict:
    return worst([compare(reference.image(job, PROBE), test.image(job, PROBE)) for job in ERROR_JOBS])


def cross_checks(bundle_dir: Path, G) -> dict:
    """The written FP16 graphs run with ONNX Runtime's own FP16 CPU kernels, and INT8 one stage at a time."""
    bundle = read_bundle(bundle_dir)
    fp32 = load_models(bundle)
    graphs = {f"{s}.{p}": onnx.load(bundle.graph_path(s, p)) for s in ("lines", "pixels") for p in ("fp16", "int8")}
    reference = StageRunner(fp32)
    activation = activation_form_models(bundle, G)
    int8_reference = StageRunner(activation)
    return {
        "fp16_graphs_in_onnxruntime": probe_errors(reference, StageRunner(
            {**fp32, "lines": graphs["lines.fp16"], "pixels": graphs["pixels.fp16"]})),
        "int8_lines_only": probe_errors(int8_reference, StageRunner({**activation, "lines": graphs["lines.int8"]})),
        "int8_pixels_only": probe_errors(int8_reference, StageRunner({**activation, "pixels": graphs["pixels.int8"]})),
        "probe": f"{PROBE} rows x {PROBE} columns of each error job",
    }


@benchmark("precision", __doc__, takes="about 4 min on 2 cores")
def main() -> dict:
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)  # calibration's progress
    for noisy in ("onnx_ir", "onnxscript", "root"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    G = random_generator(GeneratorConfig(), seed=0, output_std=0.5)
    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = export_bundle(G, Path(tmp) / "bundle", verify=False, progress=True)
        report = calibrate_bundle(bundle_dir, True, True, G, ANALYSIS_JOBS, ERROR_JOBS, keep_below_bar=True)
        checks = cross_checks(bundle_dir, G)
        manifest = read_bundle(bundle_dir).manifest
        plans = {precision: build_plan(manifest, precision, [(2048, 512)], 1, JETSON_BUDGET)
                 for precision in ("fp16", "int8")}
    fp16 = report["fp16"]["predicted_error"]["worst"]
    int8 = report["int8"]["measured_error"]["worst"]
    result = {
        "config": "GeneratorConfig() (published), random weights, image std 0.5",
        "psnr_definition": "10*log10(2.0**2 / MSE) on the float image, range [-1, 1]",
        "backend": "ONNX Runtime CPU",
        "bars": PRECISION_BARS,
        "fp16": {**report["fp16"], "meets_bar": not shortfalls("fp16", fp16)},
        "int8": {**report["int8"], "meets_bar": not shortfalls("int8", int8)},
        "cross_checks": checks,
        "analysis_jobs": report["jobs"], "error_jobs": report["error_jobs"],
        "trt_dry_run_2048x512_3GiB": {p: {"text": plan.describe(), **plan.to_dict()} for p, plan in plans.items()},
    }
    print(f"FP16 predicted vs FP32 at 512x512 (worst of {len(ERROR_JOBS)} latents): max abs {fp16['max_abs']:.3g}, "
          f"PSNR {fp16['psnr_db']} dB, uint8 pixels changed {100 * fp16['uint8_pixels_changed']:.2f}%")
    kept = report["fp16"]["plan"]["fp32_compute_nodes"]
    print(f"FP32 islands (besides the style path): {len(kept)} compute nodes: "
          + ", ".join(f"{k['stage']}/{k['name']} ({k['op']}, {k['fp32_reason']})" for k in kept[:20]))
    print(f"INT8 measured in ONNX Runtime CPU at 512x512: max abs {int8['max_abs']:.3g}, PSNR {int8['psnr_db']} dB, "
          f"uint8 PSNR {int8['uint8_psnr_db']} dB ({report['int8']['plan']['int8_layers']} of "
          f"{report['int8']['plan']['layers']} layers INT8; benchmarks/int8.py has the plan's curve and speed)")
    print(f"Cross-checks on a {PROBE}x{PROBE} probe: {json.dumps(checks)}")
    print("\n".join(plans["fp16"].describe()))
    return result


if __name__ == "__main__":
    entry_point(main)()
