"""ONNX export of CREPS generators into bundles (needs PyTorch, onnx, onnxscript, onnxruntime)."""

from creps.export.writer import export_bundle

__all__ = ["export_bundle"]
