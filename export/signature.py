"""What a staged graph file declares, readable without PyTorch (creps-export's engine path
and creps-calib use it on devices that have none): the oldest opset the graphs are
written in, and the I/O signature the manifest records for each graph. The onnx package
is imported only where a graph is read, so building engines needs only TensorRT."""

from __future__ import annotations

MIN_OPSET = 17


def io_signature(model: onnx.ModelProto) -> dict[str, list[dict]]:  # noqa: F821 (annotation only)
    """{'inputs': [{name, dtype, shape}], 'outputs': [...]}; dynamic axes by name."""
    import onnx

    def describe(value: onnx.ValueInfoProto) -> dict:
        tensor = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        shape = [d.dim_param if d.HasField("dim_param") else d.dim_value for d in tensor.shape.dim]
        return {"name": value.name, "dtype": dtype, "shape": shape}

    return {"inputs": [describe(v) for v in model.graph.input],
            "outputs": [describe(v) for v in model.graph.output]}
