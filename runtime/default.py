"""The bundled default model as a bundle: exported once into the user cache, then reused.

The package ships the default generator as a checkpoint (`creps/data/default/
network.safetensors`), not as ONNX graphs: a bundle is a build product of the
checkpoint. The first `creps-run` without `--bundle` runs `creps-export` on it (this needs
PyTorch and the exporter) into `$XDG_CACHE_HOME/creps/bundles/default-<sha256 prefix>`,
keyed by the checkpoint's hash so a new default model gets a new bundle. It runs as a
separate command, so the runtime itself never imports PyTorch or the exporter.

Only a folder with a manifest counts: the exporter writes it atomically (as
`.default-<hash>.<random>.partial` until complete), one process at a time exports
(a lock on the cache folder), and that process first removes what a killed export left.
An interrupted first run passes the signal on to the exporter and waits for it to clean up.
The cache is ours, not the user's: a cached bundle that no longer reads (files changed or
damaged, a manifest of an older format) is exported again, with a warning, rather than
refused with advice about a bundle the user never made.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path

from creps.errors import BundleError, CrepsError, install_hint
from creps.extras import missing
from creps.files import remove_leftovers
from creps.runtime.bundle import MANIFEST, read_bundle, sha256_file

log = logging.getLogger(__name__)

def package_data() -> Path:
    import creps

    return Path(creps.__file__).resolve().parent / "data"


def default_checkpoint() -> Path:
    return package_data() / "default" / "network.safetensors"


def tiny_bundle() -> Path:
    """The tiny bundle the package ships (tests/make_tiny_bundle.py writes it): the torch-free
    tests and creps-doctor run on it."""
    return package_data() / "tiny"


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "creps" / "bundles"


def default_bundle() -> Path:
    """The default model's bundle folder, exporting it on first use."""
    checkpoint = default_checkpoint()
    if not checkpoint.is_file():
        raise CrepsError(f"no --bundle given and this install has no default model ({checkpoint}); pass --bundle DIR")
    bundle = cache_root() / f"default-{sha256_file(checkpoint)[:16]}"
    if usable(bundle):
        with export_lock(bundle.parent):  # a killed export's temporaries go, once none is running
            remove_leftovers(bundle)
        return bundle
    absent = missing("export")
    if absent:
        raise CrepsError(
            f"no --bundle given: the default model is exported once into {bundle}, which needs "
            f"{', '.join(absent)} ({install_hint('export')}), or pass --bundle DIR"
        )
    with export_lock(bundle.parent):
        if not usable(bundle):  # or another process exported it while this one waited
            remove_leftovers(bundle)
            if (bundle / MANIFEST).is_file():
                log.warning("the cached default bundle %s is damaged or stale; exporting it again", bundle)
            else:
                log.warning("first run: exporting the default model into %s (once)", bundle)
            export(checkpoint, bundle)
    return bundle


def usable(bundle: Path) -> bool:
    """Whether the cached bundle reads and every file matches its manifest."""
    if not (bundle / MANIFEST).is_file():
        return False
    try:
        read_bundle(bundle)
    except BundleError as exc:
        log.info("cached default bundle refused: %s", exc)
        return False
    return True


@contextlib.contextmanager
def export_lock(folder: Path):
    """Hold an exclusive lock on `folder` (released by the kernel if this process dies)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def export(checkpoint: Path, bundle: Path) -> None:
    """Run creps-export on `checkpoint` into `bundle` (replacing a folder without a manifest)."""
    command = [sys.executable, "-c", "from creps.cli import run_command; from creps.export.cli import cli; "
               "run_command(cli, quiet_interrupt=True, restore_handlers=False)",
               "--network", str(checkpoint), "--out", str(bundle), "--onnx", "--force"]
    # A session of its own: a terminal's Ctrl-C reaches this process only, which passes it on
    # once as SIGTERM; the exporter removes its temporaries and leaves `interrupted` to us.
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        code = child.wait()
    except BaseException:
        child.terminate()
        child.wait()
        raise
    if code != 0:
        raise CrepsError(f"exporting the default model into {bundle} failed (see above); or pass --bundle DIR")
