"""Console scripts for the commands whose modules import torch, onnx or the web stack at their top (torch-free).

Each launcher checks, without importing anything, that its command's extra is installed,
and only then imports the command: on a runtime-only install (`.[ort]`) the answer is one
line saying what to install, not a ModuleNotFoundError traceback. `creps-run` and
`creps-export` are not here: what they need depends on their options (creps-export --trt
builds engines from a bundle with neither torch nor onnx), so they check where it is used.
"""

from __future__ import annotations

import importlib

from creps.cli import fail
from creps.errors import MissingDependency
from creps.extras import require


def launcher(command: str, module: str, extra: str):
    """The console-script function of `command`: `module.main` once `extra` is found installed."""

    def main():
        try:
            require(command, extra)
        except MissingDependency as exc:
            fail(str(exc))
        importlib.import_module(module).main()

    return main


generate = launcher("creps-generate", "creps.generate", "torch")
train = launcher("creps-train", "creps.train.cli", "train")
calib = launcher("creps-calib", "creps.calib.cli", "calib")
bench = launcher("creps-bench", "creps.bench", "bench")
serve = launcher("creps-serve", "creps.serve.cli", "serve")
