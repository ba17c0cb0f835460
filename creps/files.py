"""Atomic output: a file or folder appears complete under its name, or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, directory: bool = False, overwrite: bool = True):
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds.

    The temporary name starts with '.' and ends with '.partial', so an interrupted write
    never leaves something that looks like the real output. A directory target is
    replaced whole (`overwrite`) or refused with FileExistsError.
    """
    path = Path(path)
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory:
            if path.exists():
                if not overwrite:
                    raise FileExistsError(f"{path} exists")
                shutil.rmtree(path)
            os.replace(tmp, path)
        else:
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
