"""creps.runtime: generate images from a bundle with numpy and ONNX Runtime or TensorRT (never torch)."""

from creps.errors import BundleError
from creps.runtime.bundle import Bundle, read_bundle

__all__ = ["Bundle", "BundleError", "read_bundle"]
