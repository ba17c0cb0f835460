"""A seed's whole pyramid as static Deep Zoom files: OUT.dzi and OUT_files/{level}/{col}_{row}.png.

Every tile comes from a `TileRenderer`, so the files are the server's tiles byte for byte.
Levels are rendered one after another, each row left to right: a level's tile columns
share their xs features across its rows and a row its ys across its columns, so with a
line cache holding one level's columns every line is computed once.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from tqdm import tqdm

from creps.errors import CrepsError
from creps.files import atomic_path
from creps.serve.tiles import TileKey, TileRenderer

log = logging.getLogger(__name__)

SUFFIX = ".dzi"
FILES = "_files"


def dzi_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """(OUT.dzi, OUT_files) of `--dzi OUT` (a trailing .dzi on OUT dropped); refuses, before
    any work, an OUT whose descriptor or tile folder cannot be written there."""
    text = os.fspath(out)
    if not text or text.endswith(("/", os.sep)):
        raise CrepsError(f"--dzi {text!r}: give a name (OUT makes OUT.dzi and OUT_files/), not a folder")
    base = Path(text[:-len(SUFFIX)] if text.lower().endswith(SUFFIX) else text)
    descriptor, folder = base.with_name(base.name + SUFFIX), base.with_name(base.name + FILES)
    if descriptor.is_dir():
        raise CrepsError(f"--dzi {text}: {descriptor} is a folder")
    if folder.exists() and not folder.is_dir():
        raise CrepsError(f"--dzi {text}: {folder} is a file, and the tiles need a folder")
    existing = next(p for p in (base.parent, *base.parent.parents) if p.exists())
    if not existing.is_dir():
        raise CrepsError(f"--dzi {text}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise CrepsError(f"--dzi {text}: cannot write into {existing}")
    return descriptor, folder


def pyramid_keys(renderer: TileRenderer, seed: int, psi: float) -> list[TileKey]:
    """Every tile of the pyramid in writing order: level by level, row by row, left to right."""
    canvas = renderer.canvas
    return [TileKey(seed, psi, level, col, row) for level in range(canvas.levels)
            for row in range(canvas.tile_counts(level)[1]) for col in range(canvas.tile_counts(level)[0])]


def write_pyramid(renderer: TileRenderer, seed: int, psi: float, out: str | os.PathLike,
                  progress: bool = False) -> tuple[Path, Path]:
    """Write the pyramid of (seed, psi) as `dzi_paths(out)`; returns them. Atomic: the tiles go
    into a temporary folder renamed onto OUT_files at the end, then OUT.dzi appears; an error
    or interrupt leaves neither."""
    descriptor, folder = dzi_paths(out)
    keys = pyramid_keys(renderer, seed, psi)
    renderer.check(keys[0])  # a bad seed or psi before any file
    with atomic_path(descriptor) as descriptor_tmp:
        with atomic_path(folder, directory=True) as tiles_tmp:
            tiles_tmp.chmod(0o755)  # a temporary folder is private; the pyramid is for a web server
            with tqdm(total=len(keys), unit="tile", desc="tiles", disable=not progress, leave=False) as bar:
                for key in keys:
                    level = tiles_tmp / str(key.level)
                    level.mkdir(exist_ok=True)
                    (level / f"{key.col}_{key.row}.png").write_bytes(renderer.render(key).png)
                    bar.update()
        descriptor_tmp.write_text(renderer.descriptor(), encoding="utf-8")
    log.info("wrote %s and %d tiles in %s", descriptor, len(keys), folder)
    return descriptor, folder
