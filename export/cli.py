"""creps-export: a checkpoint -> a bundle of staged ONNX graphs, checked against PyTorch."""

from __future__ import annotations

from pathlib import Path

import click

from creps.cli import entry_point
from creps.export.graphs import MIN_OPSET
from creps.generate import resolve_network


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--network", type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint (.safetensors or original .pkl); default: the bundled default model.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Bundle folder to write.")
@click.option("--onnx", "with_onnx", is_flag=True, help="Export the staged ONNX graphs (mapping, lines, pixels).")
@click.option("--fused", is_flag=True, help="Also export generator.onnx (z, psi, ys, xs -> img) in one graph.")
@click.option("--opset", type=click.IntRange(min=MIN_OPSET), default=18, show_default=True, help="ONNX opset.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check the graphs against PyTorch with ONNX Runtime (CPU) at six sizes before finishing.")
@click.option("--force", is_flag=True, help="Replace an existing --out folder.")
def cli(network, out, with_onnx, fused, opset, verify, force):
    """Export a CREPS generator into a bundle that creps-run, ONNX Runtime or TensorRT can load.

    The bundle is a folder with manifest.json and one ONNX graph per stage; height and
    width are dynamic, so one bundle makes images of any size. The graphs are checked
    against the PyTorch model before the folder appears (--no-verify skips that).

    \b
    Example:
      creps-export --network ffhq256.safetensors --out bundles/ffhq256 --onnx
      creps-run --bundle bundles/ffhq256 --size 1024x256 --seeds 0-3 --out out/
    """
    if not with_onnx:
        raise click.UsageError("nothing to export: pass --onnx")
    from creps.checkpoint import load_generator
    from creps.export import export_bundle

    network = resolve_network(network)
    G = load_generator(network)
    bundle = export_bundle(G, out, source=network, opset=opset, fused=fused, verify=verify, force=force,
                           progress=True)
    click.echo(f"wrote {bundle}")


main = entry_point(cli)
