"""creps-calib: FP16 and INT8 graphs for a bundle, with their error against FP32.

\b
Examples:
  creps-calib --bundle out/ffhq                       # FP16 graphs (lines.fp16, pixels.fp16)
  creps-calib --bundle out/ffhq --int8 --network ffhq.safetensors
  creps-calib --bundle out/ffhq --no-fp16 --int8 --target-psnr 48 --network ffhq.safetensors
  creps-calib --bundle out/ffhq --seeds 0-3 --trunc 1.0,0.7 --sizes 512x512,2048x512 --report calib.json

Sample jobs pair the seeds with the psi values and sizes, cycling the shorter lists
(defaults: seed 0 at psi 1 and 512x512, seed 1 at psi 0.7 and 2048x512). Graphs whose
images on the worst job miss the precision bar against fp32 are refused (--force keeps
them, with a warning): {bars}. Graphs with NaN or Inf in their images are always refused.

INT8 measures each layer's error contribution and keeps in float the least work (the layers
with the most error per multiply-add) that holds the images' uint8 PSNR at --target-psnr
(the int8 bar's by default; 0 puts every layer of those stages in INT8) on the sample jobs
and --plan-seeds more latents, in the stages whose INT8 runs faster on this CPU
(--int8-stages names them instead, e.g. for TensorRT); the plan and the layers kept in
float go into the manifest.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from creps.calib.bars import PRECISION_BARS, describe_bars, psnr_key
from creps.calib.int8 import PLAN_SEEDS, RANGE_SEEDS
from creps.cli import SEEDS, SIZE, command, entry_point
from creps.errors import CrepsError
from creps.extras import require
from creps.files import atomic_path

log = logging.getLogger(__name__)


def jobs_from(seeds: list[int], psis: list[float], sizes: list[tuple[int, int]]):
    from creps.calib.samples import Job

    return tuple(Job(seed, psis[i % len(psis)], *sizes[i % len(sizes)]) for i, seed in enumerate(seeds))


def parse_stages(text: str) -> tuple[str, ...]:
    from creps.runtime.precision import REDUCED_STAGES

    named = [p.strip() for p in text.split(",")]
    if not named or any(p not in REDUCED_STAGES for p in named):
        raise click.BadParameter(f"{text!r}: give auto, or stages from {', '.join(REDUCED_STAGES)}, comma-separated",
                                 param_hint="--int8-stages")
    return tuple(s for s in REDUCED_STAGES if s in named)


def parse_floats(text: str) -> list[float]:
    try:
        return [float(p) for p in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers") from None


@command(help=__doc__.format(bars=describe_bars()), context_settings={"max_content_width": 100})
@click.option("--bundle", "bundle_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Bundle folder written by creps-export.")
@click.option("--fp16/--no-fp16", default=True, show_default=True, help="FP16 range analysis and FP16 graphs.")
@click.option("--int8", is_flag=True, help="INT8 Q/DQ graphs calibrated on the sample jobs.")
@click.option("--network", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Checkpoint the bundle came from (INT8 re-exports folded graphs from it; needs PyTorch).")
@click.option("--seeds", type=SEEDS, default="0,1", show_default=True, help="Seeds of the sample jobs.")
@click.option("--trunc", "psis", default="1.0,0.7", show_default=True, help="Truncation psi values, cycled.")
@click.option("--sizes", default="512x512,2048x512", show_default=True, help="Sizes WxH, cycled.")
@click.option("--target-psnr", type=click.FloatRange(min=0), default=PRECISION_BARS["int8"][psnr_key("int8")],
              show_default=True, help="INT8: the uint8 PSNR (dB) the mixed plan aims at.")
@click.option("--range-seeds", type=click.IntRange(min=0), default=RANGE_SEEDS, show_default=True,
              help="INT8: more latents, at psi 1, the activation ranges are taken from (fewer: faster, ranges that "
                   "new latents exceed more often).")
@click.option("--plan-seeds", type=click.IntRange(min=0), default=PLAN_SEEDS, show_default=True,
              help="INT8: more latents, at psi 1, the plan must hold the target on, besides the sample jobs (fewer: "
                   "faster, plans that new latents miss more often).")
@click.option("--weight-bits", type=click.Choice(["auto", "7", "8"]), default="auto", show_default=True,
              help="INT8: the weights' width. 8 runs exactly on TensorRT and on CPUs with VNNI or Arm dot products; "
                   "ONNX Runtime on x86 CPUs without VNNI saturates it and runs only 7 (and refuses 8-bit graphs "
                   "there); auto: 8 where this CPU runs it exactly, else 7.")
@click.option("--int8-stages", default="auto", show_default=True,
              help="INT8: the stages whose layers may be INT8 (lines, pixels, or lines,pixels); auto: those whose "
                   "INT8 graph runs faster than FP32 on this CPU with ONNX Runtime (name both for TensorRT).")
@click.option("--force", is_flag=True, help="Keep graphs whose error misses the precision bar (with a warning).")
@click.option("--report", type=click.Path(path_type=Path, dir_okay=False), help="Also write the report as JSON here.")
def cli(bundle_dir, fp16, int8, network, seeds, psis, sizes, target_psnr, range_seeds, plan_seeds, weight_bits,
        int8_stages, force, report):
    if not (fp16 or int8):
        raise CrepsError("nothing to do: pass --fp16 and/or --int8")
    sizes = [SIZE.convert(s, None, None) for s in sizes.split(",")]
    stages = None if int8_stages == "auto" else parse_stages(int8_stages)
    jobs = jobs_from(seeds, parse_floats(psis), sizes)
    G = None
    if int8 and network is not None:  # only INT8 of folded graphs reads the checkpoint
        require("creps-calib --int8 --network", "export")
        from creps.checkpoint import load_generator

        G = load_generator(network)
    from creps.calib.bundle import calibrate_bundle
    from creps.runtime.cpu import exact_weight_bits

    weight_bits = exact_weight_bits() if weight_bits == "auto" else int(weight_bits)

    result = calibrate_bundle(bundle_dir, fp16, int8, G, jobs, source=network if G else None, keep_below_bar=force,
                              target_psnr=target_psnr, range_seeds=range_seeds, plan_seeds=plan_seeds,
                              weight_bits=weight_bits, int8_stages=stages)
    for kind, key in (("fp16", "predicted_error"), ("int8", "measured_error")):
        if kind in result:
            err = result[kind][key]["worst"]
            click.echo(f"{kind}: {key.replace('_', ' ')} vs fp32: max abs {err['max_abs']:.3g}, "
                       f"PSNR {err['psnr_db']} dB, uint8 PSNR {err['uint8_psnr_db']} dB, "
                       f"uint8 pixels changed {100 * err['uint8_pixels_changed']:.2f}%")
    if "int8" in result:
        plan = result["int8"]["plan"]
        click.echo(f"int8: {plan['int8_layers']} of {plan['layers']} layers in INT8 with {plan['weight_bits']}-bit "
                   f"weights (target {target_psnr:g} dB), {100 * plan['float_work_share']:.1f}% of the work in float; "
                   f"kept in float: {', '.join(plan['float_layers']) or 'none'}")
    if report is not None:
        with atomic_path(report) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")


main = entry_point(cli)
