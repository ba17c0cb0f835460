"""FP16 emulated on the CPU: ONNX graph rewrites run by ONNX Runtime in float32.

`with_fp16_rounding(model, nodes)` inserts a Cast(float16) -> Cast(float32) pair on every
float tensor that the chosen nodes read or write, so the graph computes in float32 but
every value stored by an FP16 node is an FP16 value (weights included). That is what a
strongly typed TensorRT FP16 layer does to its inputs and outputs; inside a layer TensorRT
accumulates MatMul/reductions in FP32, which ONNX Runtime's float32 kernels also do, so the
emulation predicts the storage error, which dominates for these MLP-like graphs.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16
FP16_MAX = 65504.0
# Ops that only move or select values: rounding their output repeats their input's rounding.
MOVEMENT_OPS = frozenset({"Reshape", "Transpose", "Unsqueeze", "Squeeze", "Slice", "Concat", "Gather",
                          "Expand", "Identity", "Split", "Flatten", "Shape", "Tile"})
TYPED_OPS = frozenset({"Cast", "CastLike", "Constant", "ConstantOfShape", "EyeLike", "RandomNormal",
                       "RandomUniform", "Range"})


def float_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of every float32 tensor of the graph (inputs, initializers, intermediates, outputs)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    names = {t.name for t in graph.initializer if t.data_type == FLOAT}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if value.type.tensor_type.elem_type == FLOAT:
            names.add(value.name)
    for node in graph.node:  # Constant nodes carry their type in the attribute
        if node.op_type == "Constant" and node.attribute and node.attribute[0].t.data_type == FLOAT:
            names.update(node.output)
    return names


def dependent_nodes(model: onnx.ModelProto, inputs: set[str]) -> set[str]:
    """Names of the nodes whose outputs depend on any of `inputs` (graph order is topological)."""
    tainted, found = set(inputs), set()
    for node in model.graph.node:
        if tainted.intersection(node.input):
            tainted.update(node.output)
            found.add(node.name)
    return found


def compute_nodes(model: onnx.ModelProto, names: set[str]) -> list[onnx.NodeProto]:
    """The nodes among `names` that compute new float values (not shape or data movement,
    nor ops whose output type is an attribute: they stay as written)."""
    floats = float_tensors(model)
    return [n for n in model.graph.node
            if n.name in names and n.op_type not in MOVEMENT_OPS | TYPED_OPS and floats.intersection(n.output)]


def with_movement_nodes(model: onnx.ModelProto, fp16_compute: set[str]) -> set[str]:
    """`fp16_compute` plus the movement nodes whose float inputs all come from FP16 nodes.

    A Reshape of a graph input stays FP32, so the coordinates are never rounded before the
    first FP32 node that reads them; FP16 starts at the first FP16 compute node.
    """
    floats = float_tensors(model)
    constants = {t.name for t in model.graph.initializer}
    fp16_nodes, fp16_tensors = set(), set()
    for node in model.graph.node:
        inputs = [i for i in node.input if i in floats and i not in constants]
        if node.name in fp16_compute or (
                node.op_type in MOVEMENT_OPS and inputs and all(i in fp16_tensors for i in inputs)):
            fp16_nodes.add(node.name)
            fp16_tensors.update(node.output)
    return fp16_nodes


def _round_trip(src: str, dst: str, tag: str, switch: str | None = None) -> list[onnx.NodeProto]:
    """Nodes computing dst = float32(float16(src)); with `switch`, dst = switch ? rounded : src."""
    half, back = f"{dst}__fp16", (f"{dst}__round" if switch else dst)
    nodes = [helper.make_node("Cast", [src], [half], name=f"{tag}__to_fp16", to=FLOAT16),
             helper.make_node("Cast", [half], [back], name=f"{tag}__to_fp32", to=FLOAT)]
    if switch:
        nodes.append(helper.make_node("Where", [switch, back, src], [dst], name=f"{tag}__switch"))
    return nodes


def switch_name(index: int) -> str:
    return f"fp16_switch_{index}"


def with_fp16_rounding(model: onnx.ModelProto, fp16_nodes: set[str] | list[str],
                       switchable: bool = False) -> onnx.ModelProto:
    """A copy of `model` where the float tensors read or written by `fp16_nodes` are FP16-rounded.

    With `switchable`, node number k of `fp16_nodes` (in the given order) rounds only when
    the boolean scalar input `switch_name(k)` is true, so one session serves every choice
    of FP16 nodes (Where picks the exact or the rounded value: no arithmetic on either).
    """
    order = list(fp16_nodes)
    index = {name: k for k, name in enumerate(order)}
    floats = float_tensors(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    rounded: dict[str, str] = {}  # float32 tensor -> its rounded copy (shared unless switchable)
    produced_fp16: set[str] = set()
    nodes = []
    for node in model.graph.node:
        if node.name not in index:
            nodes.append(node)
            continue
        switch = switch_name(index[node.name]) if switchable else None
        node = onnx.NodeProto.FromString(node.SerializeToString())
        for i, name in enumerate(node.input):
            if name in floats and (switchable or name not in produced_fp16):
                key = f"{name}__k{index[node.name]}" if switchable else name
                if key not in rounded:
                    rounded[key] = f"{key}__rounded"
                    nodes += _round_trip(name, rounded[key], f"{key}__in", switch)
                node.input[i] = rounded[key]
        casts = []
        for i, name in enumerate(node.output):
            if name in floats:
                node.output[i] = f"{name}__exact"
                casts += _round_trip(node.output[i], name, f"{name}__out", switch)
                produced_fp16.add(name)
        nodes += [node, *casts]
    del graph.node[:]
    graph.node.extend(nodes)
    if switchable:
        graph.input.extend(helper.make_tensor_value_info(switch_name(k), TensorProto.BOOL, [])
                           for k in range(len(order)))
    return out


def switches(count: int, on: set[int]) -> dict[str, np.ndarray]:
    """Feeds for a switchable graph: node k rounds when k is in `on`."""
    return {switch_name(k): np.array(k in on) for k in range(count)}


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of `model` that also returns the tensors `names` (float32, any shape)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output}
    out.graph.output.extend(helper.make_tensor_value_info(n, FLOAT, None) for n in names if n not in have)
    return out


def session(model: onnx.ModelProto, threads: int = 2):
    """An ONNX Runtime CPU session for an in-memory model (no graph optimisation: keep every cast)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def max_abs(values) -> float:
    return float(np.max(np.abs(values))) if np.size(values) else 0.0
