"""creps-train: train a CREPS generator with the original's recipe (StyleGAN2-ADA loop)."""

from __future__ import annotations

import json
import logging
import os
import textwrap

import click

from creps.cli import command, entry_point
from creps.generate import DEFAULT_NETWORK
from creps.train.loop import TrainOptions, train


def default_recipe() -> str:
    """The bundled default model's dataset and training commands, as its record states them."""
    record = json.loads(DEFAULT_NETWORK.with_suffix(".json").read_text())
    res = record["options"]["resolution"]
    options = record["command"].replace(" ", "\xa0").replace("\xa0--", " --")  # wrap between options only
    train_command = " \\\n      ".join(textwrap.wrap(options, 90, break_on_hyphens=False)).replace("\xa0", " ")
    return (f"  # The bundled default model's recipe ({res}x{res} textures; {record['duration_minutes']} minutes on a CPU,\n"
            f"  # stopped at {record['kimg']} kimg):\n"
            f"  {record['dataset_command']}\n"
            f"  {train_command}")


EXAMPLES = f"""
\b
Examples:
{default_recipe()}
\b
  # The published 256x256 config on 8 GPUs of one machine:
  torchrun --nproc_per_node=8 -m creps.train --data ffhq-256x256.zip --outdir runs/ffhq \\
      --resolution 256 --batch 32 --gamma 2 --mirror --device cuda
\b
  # Continue after a crash or a kill, from the newest snapshot in --outdir:
  creps-train ... --resume auto
"""


@command(epilog=EXAMPLES, context_settings={"max_content_width": 100})
@click.option("--data", required=True, type=click.Path(), help="Folder of images (searched recursively) or a zip.")
@click.option("--outdir", required=True, type=click.Path(file_okay=False), help="Where snapshots and stats go.")
@click.option("--resolution", default=256, show_default=True, help="Training resolution (power of two >= 8).")
@click.option("--kimg", default=25000.0, show_default=True, help="Total training length in thousands of images.")
@click.option("--batch", default=32, show_default=True, help="Global batch size (over all processes).")
@click.option("--batch-gpu", type=int, default=None, help="Images per process and round (default: batch/processes).")
@click.option("--gamma", default=10.0, show_default=True, help="R1 weight.")
@click.option("--mirror", is_flag=True, help="Random x-flips of the data (doubles it).")
@click.option("--aug", type=click.Choice(["ada", "noaug"]), default="ada", show_default=True, help="Augmentation.")
@click.option("--target", default=0.6, show_default=True, help="ADA target for E[sign(D(real))].")
@click.option("--cbase", default=32768, show_default=True,
              help="Channel base; as in the original, G uses twice this and D this.")
@click.option("--cmax", default=512, show_default=True, help="Max channels; G uses twice this, D this.")
@click.option("--map-depth", default=8, show_default=True, help="Mapping network layers.")
@click.option("--z-dim", default=512, show_default=True, help="Latent and w dimension.")
@click.option("--glr", default=0.002, show_default=True, help="G learning rate.")
@click.option("--dlr", default=0.002, show_default=True, help="D learning rate.")
@click.option("--snap-kimg", default=200.0, show_default=True, help="Snapshot (and sample grid) interval, kimg.")
@click.option("--tick-kimg", default=4.0, show_default=True, help="Statistics interval, kimg.")
@click.option("--seed", default=0, show_default=True, help="Random seed (initialisation and the whole run).")
@click.option("--resume", default=None, help="A snapshot to continue from, or 'auto' (newest in --outdir).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N (torchrun: one GPU each).")
@click.option("--inception", type=click.Path(), default=None,
              help="TorchScript Inception file: compute FID at each snapshot (local file only).")
@click.option("--fid-images", default=5000, show_default=True, help="Generated images per FID.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Where prepared images are cached (default ~/.cache/creps/datasets).")
def cli(**options):
    """Train a CREPS generator. Images are centre-cropped and resized once, up front.

    Under torchrun (`torchrun --nproc_per_node=K -m creps.train ...`) the global --batch is
    split over the K processes (NCCL on GPUs, gloo on CPU).
    """
    if int(os.environ.get("RANK", "0")) == 0:
        logging.getLogger("creps").setLevel(logging.INFO)
    train(TrainOptions(**options))  # it leaves no empty --outdir when it stops on an error or a signal


main = entry_point(cli)
