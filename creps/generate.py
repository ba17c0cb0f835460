"""`creps-generate`: images from a CREPS checkpoint with the PyTorch model (the reference path)."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import numpy as np
import torch
from tqdm import tqdm

from creps import grid
from creps.checkpoint import load_generator
from creps.cli import FIT, SEEDS, SIZE, WINDOW, command, entry_point
from creps.device import pick_device
from creps.errors import CrepsError, NonFiniteError
from creps.files import creating_folder
from creps.images import image_paths, save_image

log = logging.getLogger(__name__)

DEFAULT_NETWORK = Path(__file__).parent / "data" / "default" / "network.safetensors"
# The pixel stage runs in row bands of about this many pixels, so memory stays flat as images grow.
PIXELS_PER_BAND = 1 << 18


def resolve_network(network: Path | None) -> Path:
    if network is not None:
        return network
    if DEFAULT_NETWORK.is_file():
        return DEFAULT_NETWORK
    raise CrepsError(f"no --network given and no default model is bundled (looked for {DEFAULT_NETWORK})")


@torch.no_grad()
def render(G, z: torch.Tensor, psi: float, cutoff: int | None, ys: torch.Tensor, xs: torch.Tensor,
           seed: int | None = None) -> np.ndarray:
    """One image [H, W, 3] uint8: lines once, then the pixel stage in row bands.

    Raises NonFiniteError (naming `seed` and the band) where the model gives NaN or Inf,
    which would otherwise be written as black pixels."""
    ws = G.mapping(z, truncation_psi=psi, truncation_cutoff=cutoff)  # (1, num_ws, w_dim)
    cols, rows = G.synthesis.lines(ws, ys, xs)  # (1, B, 32, H, R), (1, B, 32, W, R)
    height, width = len(ys), len(xs)
    out = np.empty((height, width, 3), dtype=np.uint8)
    band = max(1, PIXELS_PER_BAND // width)
    for y0 in range(0, height, band):
        img = G.synthesis.pixels(ws, cols[:, :, :, y0:y0 + band], rows)  # (1, 3, h, W)
        if not torch.isfinite(img).all():
            raise NonFiniteError(f"seed {seed}: the model gave NaN or Inf in the band of rows {y0}-"
                                 f"{y0 + img.shape[2] - 1} (are the checkpoint's weights finite?); no image written")
        out[y0:y0 + band] = grid.to_uint8(img[0].cpu().numpy())
    return out


@command(context_settings={"max_content_width": 100})
@click.option("--network", type=click.Path(path_type=Path, dir_okay=False),
              help="Checkpoint: ours (.safetensors) or an original CREPS .pkl. Default: the bundled model.")
@click.option("--seeds", type=SEEDS, default="0", show_default=True, help="Seeds, e.g. 0,2,5-7.")
@click.option("--size", type=SIZE, help="Image size WxH (width x height). Default: the training resolution.")
@click.option("--trunc", "psi", type=float, default=1.0, show_default=True, help="Truncation psi.")
@click.option("--trunc-cutoff", "cutoff", type=click.IntRange(min=0),
              help="Truncate only the first N ws (default: all).")
@click.option("--window", type=WINDOW, help="Part of the plane to show, x0,y0,x1,y1 (training view: 0,0,1,1).")
@click.option("--fit", type=FIT, default="extend", show_default=True,
              help="Without --window, how a non-square size covers the training view.")
@click.option("--outdir", type=click.Path(file_okay=False), default="out", show_default=True,
              help="Folder (created if missing) of seedNNNN.png, one per seed.")
@click.option("--device", default="cpu", show_default=True, help="cpu, or cuda[:N] if available.")
def cli(network, seeds, size, psi, cutoff, window, fit, outdir, device):
    """Generate images of any size from a CREPS checkpoint (PyTorch reference).

    \b
    Examples:
      creps-generate --seeds 0-3 --outdir out
      creps-generate --network creps-ffhq-256x256.pkl --seeds 0,2,5-7 --trunc 0.7 --outdir out
      creps-generate --network ckpt.safetensors --seeds 1 --size 2048x512 --outdir panorama
      creps-generate --network ckpt.safetensors --seeds 1 --size 512x512 --window -0.5,0,1.5,2

    Seed s gives the original's latent RandomState(s).randn(1, z_dim); --size 512x512 of a
    256 model is the original's --scale 2.
    """
    if not np.isfinite(psi):
        raise click.BadParameter(f"{psi} is not a finite number", param_hint="--trunc")
    folder, paths = image_paths(outdir, seeds, option="--outdir", folder=True)
    torch_device = pick_device(device)
    G = load_generator(resolve_network(network)).to(torch_device)
    if cutoff is not None and cutoff > G.num_ws:
        raise CrepsError(f"--trunc-cutoff {cutoff} is past this generator's {G.num_ws} ws")
    width, height = size or (G.img_resolution, G.img_resolution)
    ys_np, xs_np = grid.coords(width, height, window, fit)
    ys, xs = torch.from_numpy(ys_np).to(torch_device), torch.from_numpy(xs_np).to(torch_device)
    log.info("%d image(s) of %dx%d into %s", len(seeds), width, height, outdir)
    with creating_folder(folder):
        for seed, path in tqdm(list(zip(seeds, paths)), unit="image", desc="creps-generate"):
            z = torch.from_numpy(grid.seed_to_z(seed, G.z_dim)).to(torch_device)
            save_image(render(G, z, psi, cutoff, ys, xs, seed), path)


main = entry_point(cli)
