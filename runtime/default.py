"""The bundled default model as a bundle: exported once into the user cache, then reused.

The package ships the default generator as a checkpoint (`creps/data/default/
network.safetensors`), not as ONNX graphs: a bundle is a build product of the
checkpoint. The first `creps-run` without `--bundle` runs `creps-export` on it (this needs
PyTorch and the exporter) into `$XDG_CACHE_HOME/creps/bundles/default-<sha256 prefix>`,
keyed by the checkpoint's hash so a new default model gets a new bundle. The exporter
writes the folder atomically, so an interrupted first run leaves nothing behind. It runs
as a separate command, so the runtime itself never imports PyTorch or the exporter.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

from creps.errors import CrepsError
from creps.runtime.bundle import MANIFEST, sha256_file

log = logging.getLogger(__name__)

EXPORTER_NEEDS = ("torch", "onnx", "onnxscript", "safetensors")


def missing_exporter_modules() -> list[str]:
    """The modules of EXPORTER_NEEDS this environment cannot import (found without importing)."""

    def found(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except ImportError:  # an import hook that refuses the name
            return False

    return [name for name in EXPORTER_NEEDS if not found(name)]


def default_checkpoint() -> Path:
    import creps

    return Path(creps.__file__).resolve().parent / "data" / "default" / "network.safetensors"


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "creps" / "bundles"


def default_bundle() -> Path:
    """The default model's bundle folder, exporting it on first use."""
    checkpoint = default_checkpoint()
    if not checkpoint.is_file():
        raise CrepsError(f"no --bundle given and this install has no default model ({checkpoint}); pass --bundle DIR")
    bundle = cache_root() / f"default-{sha256_file(checkpoint)[:16]}"
    if (bundle / MANIFEST).is_file():
        return bundle
    missing = missing_exporter_modules()
    if missing:
        raise CrepsError(
            f"no --bundle given: the default model is exported once into {bundle}, which needs "
            f"{', '.join(missing)} (pip install torch==2.13.0 'creps[export]'), or pass --bundle DIR"
        )
    log.warning("first run: exporting the default model into %s (once)", bundle)
    command = [sys.executable, "-c", "from creps.export.cli import main; main()",
               "--network", str(checkpoint), "--out", str(bundle), "--onnx"]
    if subprocess.run(command, stdin=subprocess.DEVNULL).returncode != 0:
        raise CrepsError(f"exporting the default model into {bundle} failed (see above); or pass --bundle DIR")
    return bundle
