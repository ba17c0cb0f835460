"""ONNX export of CREPS generators into bundles (needs PyTorch, onnx, onnxscript, onnxruntime).

Importing the package needs none of them: `export_bundle` is loaded on first use, so that
`creps-export --out DIR --trt` builds engines from a bundle on a device without PyTorch.
"""

__all__ = ["export_bundle"]


def __getattr__(name: str):
    if name == "export_bundle":
        from creps.export.writer import export_bundle

        return export_bundle
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
