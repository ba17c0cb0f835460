"""creps-run: images of any size from a bundle, tiled, without PyTorch; or a seed's deep-zoom pyramid (--dzi)."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from creps.cli import FIT, MEMORY, SEEDS, SIZE, WINDOW, command, entry_point
from creps.errors import CrepsError
from creps.files import creating_folder
from creps.images import OUT_RULE, image_paths
from creps.runtime.backends import BACKENDS
from creps.runtime.generate import Runtime
from creps.runtime.precision import CHOICES, HELP
from creps.serve.dzi import dzi_paths, write_pyramid
from creps.serve.options import cache_memory_option, canvas_options
from creps.serve.pyramid import Canvas
from creps.serve.tiles import TileRenderer

IMAGE_ONLY = ("size", "window", "fit", "batch")  # what --dzi has no use for: its canvas fixes every tile
PYRAMID_ONLY = ("views", "detail", "cache_memory")  # what --out has no use for


def given(ctx: click.Context, names) -> list[str]:
    """The options among `names` (parameter names) given on the command line, as the user spells them."""
    params = {param.name: param for param in ctx.command.params}
    return [params[name].opts[0] for name in names if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT]


@command(epilog="""
\b
Examples:
  creps-run --size 2048x512 --out pano.png                 # the bundled default model
  creps-run --bundle ffhq/ --seeds 0-7 --trunc 0.7 --out faces/
  creps-run --bundle ffhq/ --size 8192x2048 --max-memory 512M --out big.png
  creps-run --bundle ffhq/ --window 0.25,0.25,0.75,0.75 --size 1024x1024 --out zoom.png
  creps-run --bundle ffhq/ --precision auto --size 2048x512 --out fast.png   # after creps-calib --int8
  creps-run --bundle ffhq/ --seeds 7 --trunc 0.7 --dzi face7       # face7.dzi + face7_files/ (docs/serve.md)
""")
@click.option("--bundle", type=click.Path(path_type=Path), default=None,
              help="Bundle folder from creps-export (default: the bundled default model, exported once into "
                   "the user cache; that first export needs PyTorch).")
@click.option("--size", type=SIZE, default=None, help="Output WIDTHxHEIGHT (default: the training resolution).")
@click.option("--seeds", type=SEEDS, default="0", show_default=True, help="Seeds, e.g. 0,3,5-8.")
@click.option("--trunc", "psi", type=float, default=1.0, show_default=True, help="Truncation psi.")
@click.option("--window", type=WINDOW, default=None, help="The plane's part to show, x0,y0,x1,y1 (zoom/pan).")
@click.option("--fit", type=FIT, default="extend", show_default=True,
              help="Non-square sizes without --window: extend the view or stretch it.")
@click.option("--tile", type=SIZE, default=None,
              help="Pixel tile WxH (default: 128x64 on the CPU, the engine profile's largest on TensorRT).")
@click.option("--max-memory", type=MEMORY, default=None, metavar="BYTES",
              help="Budget for line features and activations, e.g. 512M, 2G; shrinks the tiles.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="auto: TensorRT engines if usable, else ONNX Runtime CUDA, else CPU.")
@click.option("--precision", type=click.Choice(CHOICES), default=None,
              help=f"{HELP} Default: fp32 on ONNX Runtime, the engines' own precision on TensorRT.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Seeds per run of the graphs.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: all cores).")
@click.option("--allow-engine-host-code", is_flag=True,
              help="Run version-compatible TensorRT engines (creps-export --version-compatible): they carry "
                   "executable host code, so pass this only for a bundle you trust.")
@click.option("--out", type=click.Path(), default=None, help=OUT_RULE)
@click.option("--dzi", type=click.Path(), default=None, metavar="OUT",
              help="Instead of --out: one seed's deep-zoom pyramid, OUT.dzi and OUT_files/{level}/{col}_{row}.png, "
                   "the tiles creps-serve serves (docs/serve.md).")
@canvas_options
@cache_memory_option
@click.pass_context
def cli(ctx, bundle, size, seeds, psi, window, fit, tile, max_memory, backend, precision, batch, threads,
        allow_engine_host_code, out, dzi, views, detail, cache_memory):
    """Generate images of any size from a creps bundle (ONNX Runtime or TensorRT, no PyTorch).

    The PNG is streamed band by band, so memory stays flat however large the image.
    With --dzi, every tile of a seed's canvas, each level rendered natively.
    """
    if (out is None) == (dzi is None):
        raise click.UsageError("give exactly one of --out (images) and --dzi (a deep-zoom pyramid)")
    if dzi is not None:
        if extra := given(ctx, IMAGE_ONLY):
            raise click.UsageError(f"{', '.join(extra)} with --dzi: the canvas fixes every tile's "
                                   "size and window (--canvas-views, --detail)")
        if len(seeds) != 1:
            raise CrepsError(f"--dzi writes one seed's pyramid, and {len(seeds)} seeds were given: run it once per seed")
        dzi_paths(dzi)  # refused before a first run's export of the default model
    else:
        if extra := given(ctx, PYRAMID_ONLY):
            raise click.UsageError(f"{', '.join(extra)} with --out: "
                                   "those shape a --dzi pyramid (an image's window is --window)")
        folder, paths = image_paths(out, seeds)
    if bundle is None:
        from creps.runtime.default import default_bundle

        bundle = default_bundle()
    with Runtime(bundle, backend=backend, tile=tile, max_memory=max_memory, threads=threads,
                 allow_engine_host_code=allow_engine_host_code, precision=precision) as runtime:
        if dzi is not None:
            renderer = TileRenderer(runtime, Canvas.of(runtime.model, views, detail), cache_memory)
            descriptor, tiles = write_pyramid(renderer, seeds[0], psi, dzi, progress=True)
            click.echo(f"wrote {descriptor} and {renderer.stats()['tiles_rendered']} tiles in {tiles}")
            return
        runtime.prepare(seeds, size, psi, fit, batch)  # refuse a bad request before touching the output
        with creating_folder(folder):
            runtime.save(paths, seeds, size, psi, window, fit, batch=batch, progress=True)
    click.echo(f"wrote {paths[0] if len(paths) == 1 else f'{len(paths)} images into {folder}'}")


main = entry_point(cli)
