"""Which optional extra a piece of work needs, and whether it is installed (found without importing it).

The one table from pyproject.toml's extras to the modules they provide, so that a command
checks before it imports torch or onnx, and a runtime-only install (`.[ort]`) gets one line
saying what to install instead of a ModuleNotFoundError traceback. Torch-free.
"""

from __future__ import annotations

import importlib.util

from creps.errors import MissingDependency

# Import names of what each extra installs (only the ones something here checks for).
MODULES = {
    "torch": ("torch", "safetensors"),
    "train": ("torch", "safetensors"),
    "calib": ("onnx", "onnxruntime"),
    "trt": ("onnx",),  # tensorrt and cuda-python are checked as they load (runtime/trt.py)
    "export": ("torch", "safetensors", "onnx", "onnxscript", "onnxruntime"),
    "bench": ("torch", "safetensors", "onnx", "onnxscript", "onnxruntime", "matplotlib"),
    "serve": ("starlette", "uvicorn"),
}


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # an import hook that refuses the name
        return False


def missing(extra: str) -> list[str]:
    """The modules of `extra` this environment cannot import."""
    return [module for module in MODULES[extra] if not installed(module)]


def require(purpose: str, extra: str) -> None:
    """Raise MissingDependency (what `purpose` needs, and how to install it) unless `extra` is installed."""
    absent = missing(extra)
    if absent:
        raise MissingDependency(purpose, absent, extra)
