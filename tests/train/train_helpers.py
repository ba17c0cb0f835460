"""Helpers for the trainer tests."""

import numpy as np
from PIL import Image


def write_images(folder, count, seed=0, sizes=((40, 24), (20, 20), (17, 33))):
    """Smooth random RGB images of a few sizes (incl. non-square, odd) in nested folders."""
    rng = np.random.RandomState(seed)
    paths = []
    for i in range(count):
        w, h = sizes[i % len(sizes)]
        base = rng.rand(4, 4, 3) * 255
        img = Image.fromarray(base.astype(np.uint8)).resize((w, h), Image.BILINEAR)
        path = folder / f"sub{i % 2}" / f"img{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
        paths.append(path)
    return paths
