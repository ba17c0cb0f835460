"""creps-export: a checkpoint -> a bundle of staged ONNX graphs, checked against PyTorch.

PyTorch is imported only where a checkpoint is read (`load_checkpoint`), so that engines
(`--trt`, `--dry-run`) build from an existing bundle on a device that has TensorRT but no
PyTorch, as JetPack installs it.
"""

from __future__ import annotations

from pathlib import Path

import click

from creps.cli import MEMORY, SIZE, command, entry_point
from creps.export.signature import MIN_OPSET
from creps.export.trt import HARDWARE_LEVELS
from creps.extras import require


def parse_sizes(ctx, param, value):
    """'512x512,2048x512' -> [(512, 512), (2048, 512)] (None: the training resolution)."""
    return None if value is None else [SIZE.convert(part, param, ctx) for part in value.split(",")]


def load_checkpoint(network: Path | None, purpose: str):
    """(checkpoint path, generator) of `network` or the bundled default model; one clear
    error naming `purpose` when the PyTorch side (torch, onnx, ...) is not installed."""
    require(purpose, "export")
    from creps.checkpoint import load_generator
    from creps.generate import resolve_network

    path = resolve_network(network)
    return path, load_generator(path)


@command(context_settings={"max_content_width": 100})
@click.option("--network", type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint (.safetensors or original .pkl); default: the bundled default model.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Bundle folder to write.")
@click.option("--onnx", "with_onnx", is_flag=True, help="Export the staged ONNX graphs (mapping, lines, pixels).")
@click.option("--fused", is_flag=True, help="Also export generator.onnx (z, psi, ys, xs -> img) in one graph.")
@click.option("--opset", type=click.IntRange(min=MIN_OPSET), default=18, show_default=True, help="ONNX opset.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check the graphs against PyTorch with ONNX Runtime (CPU) at six sizes before finishing.")
@click.option("--force", is_flag=True, help="Replace an existing --out folder.")
@click.option("--fp16", is_flag=True, help="Add FP16 graphs (FP32 islands from creps-calib's range analysis).")
@click.option("--int8", is_flag=True, help="Add INT8 Q/DQ graphs calibrated on the CPU (creps-calib).")
@click.option("--trt", is_flag=True, help="Build one TensorRT engine per stage into the bundle (needs TensorRT + GPU).")
@click.option("--sizes", callback=parse_sizes,
              help="Image sizes WxH the engines' profiles must cover, comma-separated "
                   "(default: the model's training resolution only).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Largest batch of the engines.")
@click.option("--tile", type=SIZE, help="Pixel tile WxH for the profiles (default 512x512, shrunk to --max-memory).")
@click.option("--max-memory", type=MEMORY,
              help="Device memory budget of the runtime, e.g. 3G (sizes tiles and chunks).")
@click.option("--workspace", type=MEMORY, default="1G", show_default=True,
              help="TensorRT workspace limit.")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path),
              help="TensorRT timing cache file: loaded if present, saved after the build.")
@click.option("--version-compatible", is_flag=True, help="Engines that later TensorRT releases can run (slower).")
@click.option("--hardware-compatible", "hardware", type=click.Choice(HARDWARE_LEVELS),
              is_flag=False, flag_value="ampere_plus", default="none",
              help="Engines for other GPUs (slower): any Ampere or newer (alone: ampere_plus), or any of the "
                   "build GPU's compute capability (TensorRT 10.9+).")
@click.option("--dry-run", is_flag=True,
              help="Print the TensorRT build plan (graphs, profiles, memory); build nothing.")
def cli(network, out, with_onnx, fused, opset, verify, force, fp16, int8, trt, sizes, batch, tile, max_memory,
        workspace, timing_cache, version_compatible, hardware, dry_run):
    """Export a CREPS generator into a bundle that creps-run, ONNX Runtime or TensorRT can load.

    The bundle is a folder with manifest.json and one ONNX graph per stage; height and
    width are dynamic, so one bundle makes images of any size. The graphs are checked
    against the PyTorch model before the folder appears (--no-verify skips that).

    \b
    Example:
      creps-export --network ffhq256.safetensors --out bundles/ffhq256 --onnx
      creps-run --bundle bundles/ffhq256 --size 1024x256 --seeds 0-3 --out out/
      creps-export --out bundles/ffhq256 --fp16 --trt --sizes 2048x512 --max-memory 3G --dry-run
      creps-export --out bundles/ffhq256 --fp16 --trt --sizes 2048x512 --max-memory 3G --timing-cache trt.cache

    Without --onnx, --fp16/--int8/--trt work on the existing bundle at --out.
    """
    if not (with_onnx or fp16 or int8 or trt):
        raise click.UsageError("nothing to export: pass --onnx and/or --fp16, --int8, --trt")
    has_bundle = (out / "manifest.json").is_file()
    # A plan without a bundle is for a checkpoint named on purpose, never for a mistyped --out.
    if not (with_onnx or has_bundle or (dry_run and network is not None)):
        raise click.UsageError(f"{out} is not a bundle: pass --onnx to export one there, or --out an existing bundle"
                               + (", or --network CKPT to plan for a checkpoint" if dry_run else ""))
    G = None
    if with_onnx or not has_bundle:
        network, G = load_checkpoint(network, "--onnx" if with_onnx else f"--dry-run without a bundle at {out}")
    if dry_run:
        from creps.export.trt import default_sizes_note
        from creps.export.trt_plan import build_plan
        from creps.runtime.bundle import read_bundle

        if G is None:
            manifest = read_bundle(out, verify_hashes=False).manifest
        else:
            from creps.export.writer import model_section

            manifest = {"model": model_section(G, None), "graphs": {}}
        precision = "int8" if int8 else "fp16" if fp16 else "fp32"
        if sizes is None:
            click.echo(default_sizes_note(manifest))
        for line in build_plan(manifest, precision, sizes, batch, max_memory, tile, workspace=workspace,
                               strict=False).describe():
            click.echo(line)
        return
    if with_onnx:
        from creps.export.writer import export_bundle

        out = export_bundle(G, out, source=network, opset=opset, fused=fused, verify=verify, force=force,
                            progress=True)
        click.echo(f"wrote {out}")
    if fp16 or int8 or trt:
        from creps.export.trt import precision_and_engines

        def load_G():  # INT8 calibration re-exports folded graphs from the checkpoint: (its path, G)
            return (network, G) if G is not None else load_checkpoint(network, "--int8 on this bundle")

        precision_and_engines(out, fp16=fp16, int8=int8, trt=trt, load_G=load_G, sizes=sizes, batch=batch,
                              tile=tile, max_memory=max_memory, workspace=workspace,
                              timing_cache=timing_cache, version_compatible=version_compatible,
                              hardware=hardware, echo=click.echo)


main = entry_point(cli)
