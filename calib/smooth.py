"""SmoothQuant-style migration of activation outliers into the constant weights, exactly.

A per-tensor int8 scale on an activation whose channels have very different ranges
spends most of its levels on the widest channels. For a layer y = x @ W (W [in, out]),
dividing input channel j by m_j and multiplying row j of W by m_j changes nothing,
and with m_j = amax(x_j)^alpha / amax(W_j)^(1 - alpha) the channels' ranges even out
(alpha 1: equal ranges; the weights, quantized per output channel, absorb the spread).

The division by m must cost nothing and change nothing, so it is folded into what makes x:
- `style`: x = h * s, with s a per-sample style (computed from ws alone, broadcast over
  positions): s / m is a Mul on the small style tensor;
- `columns`: x = act(h @ V + c) (through reshapes), act LeakyRelu/Relu or none, with V and
  c constant: act is positively homogeneous, so column j of V and c divided by m_j.
A layer whose input is made otherwise (a sum, a graph input) is not migrated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from creps.calib import emulate
from creps.calib.qdq import Layer, constants, weight_axis
from creps.runtime.stages import spatial_inputs

THROUGH = ("Reshape", "LeakyRelu", "Relu")  # ops that commute with a positive per-channel scale of the last axis


@dataclass(frozen=True)
class Fold:
    kind: str  # "style" or "columns"
    node: str  # the Mul (style) or the Gemm/MatMul (columns) that absorbs 1/m
    operand: str  # style: the style input of the Mul; columns: the absorbing layer's weight


def fold_of(model: onnx.ModelProto, stage: str, layer: Layer) -> Fold | None:
    """Where 1/m of `layer`'s migration goes, or None when nothing can absorb it exactly."""
    if layer.weight is None or layer.axis != 1:
        return None
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    consts = constants(model)
    moving = emulate.dependent_nodes(model, spatial_inputs(stage))
    spatial = spatial_inputs(stage) | {o for n in model.graph.node if n.name in moving for o in n.output}
    tensor = layer.activations[0]
    while tensor in producers and consumers.get(tensor) == 1:
        node = producers[tensor]
        if node.op_type == "Mul":
            styles = [i for i in node.input if i not in spatial and i not in consts]
            return Fold("style", node.name, styles[0]) if len(styles) == 1 else None
        if node.op_type in ("Gemm", "MatMul"):
            weight = node.input[1]
            bias_ok = node.op_type == "MatMul" or len(node.input) < 3 or node.input[2] in consts
            if weight in consts and len(consts[weight].dims) == 2 and weight_axis(node) == 1 and bias_ok:
                return Fold("columns", node.name, weight)
            return None
        if node.op_type not in THROUGH:
            return None
        tensor = node.input[0]
    return None


def factors(channel_amax: np.ndarray, weight: np.ndarray, alpha: float) -> np.ndarray:
    """m per input channel (geometric mean 1, so the weights' overall scale stays)."""
    x = np.maximum(channel_amax.astype(np.float64), 1e-12)
    w = np.maximum(np.abs(weight).max(axis=1).astype(np.float64), 1e-12)
    m = x**alpha / w ** (1 - alpha)
    return (m / np.exp(np.mean(np.log(m)))).astype(np.float32)


def migrate(model: onnx.ModelProto, stage: str, layers: list[Layer], alphas: dict[str, float],
            channel_amax: dict[str, np.ndarray]) -> tuple[onnx.ModelProto, dict[str, str]]:
    """A copy of `model` with each layer's activation outliers migrated by `alphas[layer]`
    (0 or absent: not migrated), and {layer: fold kind} of the migrated ones.

    `channel_amax[tensor]` is max |x| per input channel (last axis) over the calibration data.
    Changed weights become new initializers, so a weight another node reads stays as it was.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    done = {}
    for layer in layers:
        alpha = alphas.get(layer.name, 0.0)
        fold = fold_of(out, stage, layer) if alpha > 0 else None
        if fold is None:
            continue
        nodes = {n.name: n for n in out.graph.node}
        consts = constants(out)
        weight = numpy_helper.to_array(consts[layer.weight])  # (in, out)
        m = factors(channel_amax[layer.activations[0]], weight, alpha)  # (in,)
        _set_input(out, nodes[layer.name], 1, weight * m[:, None], f"{layer.name}__migrated_weight")
        absorber = nodes[fold.node]
        if fold.kind == "style":
            inverse = f"{layer.name}__migration_inverse"
            out.graph.initializer.append(numpy_helper.from_array(1 / m, inverse))
            scaled = f"{fold.operand}__migrated_for_{layer.name}"
            index = list(absorber.input).index(fold.operand)
            out.graph.node.insert(list(out.graph.node).index(absorber),
                                  helper.make_node("Mul", [fold.operand, inverse], [scaled],
                                                   name=f"{layer.name}__migrate_style"))
            absorber.input[index] = scaled
        else:
            v = numpy_helper.to_array(consts[absorber.input[1]])  # (in', in)
            _set_input(out, absorber, 1, v / m[None, :], f"{absorber.name}__migrated_weight_for_{layer.name}")
            if len(absorber.input) > 2 and absorber.input[2]:
                c = numpy_helper.to_array(consts[absorber.input[2]])
                _set_input(out, absorber, 2, c / m, f"{absorber.name}__migrated_bias_for_{layer.name}")
        done[layer.name] = fold.kind
    used = {i for n in out.graph.node for i in n.input}
    kept = [t for t in out.graph.initializer if t.name in used]  # the replaced weights go
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    return out, done


def _set_input(model: onnx.ModelProto, node: onnx.NodeProto, index: int, value: np.ndarray, name: str) -> None:
    model.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
    node.input[index] = name
