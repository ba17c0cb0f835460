"""The bundled default model's training data: random crops of public-domain / CC0 photographs
that scikit-image ships (no download).

  brick, gravel  CC0 (cc0textures.com), grayscale
  grass          CC0 (DeviantArt user linolafett), grayscale
  hubble_deep_field  NASA / Hubble, public domain

Each crop is a random square (side between MIN_SIDE and MAX_SIDE pixels of the source)
resized to the output resolution; the same seed gives the same crops.

  python -m creps.train.texture_crops --out data/textures --count 4000
"""

from __future__ import annotations

import logging
from pathlib import Path

import click
import numpy as np
from PIL import Image

from creps.cli import entry_point
from creps.images import save_image

log = logging.getLogger(__name__)

SOURCES = ("brick", "grass", "gravel", "hubble_deep_field")
MIN_SIDE, MAX_SIDE = 64, 192


def source_images() -> dict[str, Image.Image]:
    from skimage import data

    return {name: Image.fromarray(getattr(data, name)()).convert("RGB") for name in SOURCES}


def random_crops(count: int, resolution: int, seed: int):
    """Yield (name, index, (R, R, 3) uint8) for `count` crops spread evenly over the sources."""
    rng = np.random.RandomState(seed)
    sources = source_images()
    for i in range(count):
        name = SOURCES[i % len(SOURCES)]
        img = sources[name]
        side = int(rng.randint(MIN_SIDE, min(MAX_SIDE, *img.size) + 1))
        left = int(rng.randint(0, img.size[0] - side + 1))
        top = int(rng.randint(0, img.size[1] - side + 1))
        crop = img.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.LANCZOS)
        yield name, i, np.asarray(crop, dtype=np.uint8)


@click.command()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the PNG crops.")
@click.option("--count", default=4000, show_default=True)
@click.option("--resolution", default=64, show_default=True)
@click.option("--seed", default=0, show_default=True)
def cli(out, count, resolution, seed):
    """Write random crops of scikit-image's CC0/public-domain photographs as PNGs."""
    out = Path(out)
    for name, i, pixels in random_crops(count, resolution, seed):
        save_image(pixels, out / name / f"{i:05d}.png")


main = entry_point(cli)

if __name__ == "__main__":
    main()
