"""Atomic output: a file or folder appears complete under its name, or not at all."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import tempfile
from pathlib import Path

PARTIAL = ".partial"
log = logging.getLogger(__name__)


def remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, directory: bool = False, overwrite: bool = True):
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds.

    The temporary name starts with '.' and ends with '.partial', so an interrupted write
    never leaves something that looks like the real output; nor do the folders made for
    it stay behind empty (creating_folder). A directory target is
    replaced whole (`overwrite`) or refused with FileExistsError. An OSError about the
    temporary (or about no file) is raised about `path`: the user never sees our name.
    """
    path = Path(path)
    prefix, tmp = f".{path.name}.", None
    try:
        with creating_folder(path.parent):
            try:
                if directory:
                    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=PARTIAL, dir=path.parent))
                else:
                    fd, name = tempfile.mkstemp(prefix=prefix, suffix=PARTIAL, dir=path.parent)
                    os.close(fd)
                    tmp = Path(name)
                yield tmp
                if directory:
                    if path.exists():
                        if not overwrite:
                            raise FileExistsError(f"{path} exists")
                        shutil.rmtree(path)
                else:
                    os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            finally:  # before creating_folder looks whether the folders it made are empty
                if tmp is not None and tmp.exists():
                    remove(tmp)
    except OSError as exc:
        name = Path(str(exc.filename)).name
        ours = exc.filename is None or (name.startswith(prefix) and name.endswith(PARTIAL))
        if exc.errno is None or not ours:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


def remove_leftovers(path: str | os.PathLike) -> None:
    """Remove the temporaries of `atomic_path(path)` that a process killed outright (SIGKILL,
    power loss) left; only while no other process may be writing `path`."""
    path = Path(path)
    _remove_matching(path.parent, f".{glob.escape(path.name)}.*{PARTIAL}")


def remove_leftovers_in(folder: str | os.PathLike) -> None:
    """`remove_leftovers` for every output of `folder` at once (a training run's folder)."""
    _remove_matching(Path(folder), f".*{PARTIAL}")


def _remove_matching(folder: Path, pattern: str) -> None:
    for leftover in folder.glob(pattern):
        log.info("removing leftover temporary %s", leftover)
        remove(leftover)


@contextlib.contextmanager
def creating_folder(folder: str | os.PathLike):
    """Create `folder` (and its missing parents) for a command's outputs; if the block fails
    or is interrupted, remove again those it created that are still empty."""
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        for path in created:
            with contextlib.suppress(OSError):  # not empty: something was written there
                path.rmdir()
        raise
