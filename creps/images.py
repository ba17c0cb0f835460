"""Writing images: PNG through Pillow, always atomically, and where a command's images go."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from creps.errors import CrepsError
from creps.files import atomic_path

# The output-path rule, for the docstring of image_paths and every command's --help.
OUT_RULE = ("PATH ending in / or naming an existing folder: a folder (created if missing) of seedNNNN.png, "
            "one per seed. PATH ending in .png: that file, for one seed only. Any other PATH: a folder for "
            "several seeds; refused for one.")


def save_image(pixels: np.ndarray, path: str | Path) -> None:
    """Write an [H, W, 3] uint8 array; the format follows the file's extension."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image extension {path.suffix!r} (use .png)")
    with atomic_path(path) as tmp:
        Image.fromarray(pixels, "RGB").save(tmp, format=fmt)


def seed_filename(seed: int) -> str:
    return f"seed{seed:04d}.png"


def image_paths(out: str, seeds: Sequence[int], option: str = "--out",
                folder: bool = False) -> tuple[Path, list[Path]]:
    """(the folder to create, one PNG path per seed) for `option out`, by OUT_RULE; `folder`:
    `out` is a folder whatever its name (creps-generate's --outdir). Creates nothing; a
    refusal is a CrepsError naming `out` as the user wrote it."""
    path, many = Path(out), len(seeds) > 1
    folder = folder or out.endswith(("/", os.sep)) or path.is_dir()
    if not folder:
        if path.suffix.lower() == ".png" and many:
            raise CrepsError(f"{option} {out}: {len(seeds)} seeds make {len(seeds)} images, and a *.png path is "
                             f"one file; give a folder ({path.with_suffix('')}/)")
        if path.suffix.lower() != ".png" and not many:
            raise CrepsError(f"{option} {out}: creps writes PNG; name the file *.png, or end a folder with /")
        folder = many
    if folder and path.exists() and not path.is_dir():
        raise CrepsError(f"{option} {out}: this is a file, and the images need a folder")
    directory = path if folder else path.parent
    existing = next(p for p in (directory, *directory.parents) if p.exists())  # "." or "/" at the latest
    if not existing.is_dir():
        raise CrepsError(f"{option} {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise CrepsError(f"{option} {out}: cannot write into {existing}")
    return directory, [directory / seed_filename(seed) for seed in seeds] if folder else [path]
