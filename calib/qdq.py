"""Explicit Q/DQ by TensorRT's rules: which layers can be INT8, inserting the Q/DQ nodes, and the rule checker.

TensorRT's explicit quantization (strongly typed, 10.3 and 11.x) reads precision from
QuantizeLinear -> DequantizeLinear pairs in front of a layer's inputs. The rules we
build by and check (`violations`):

- int8 with zero point 0 (symmetric): a zero point, when given, is an int8 constant of
  zeros; without one, QuantizeLinear makes uint8 unless `output_dtype` says int8;
- scales are positive, finite float32 constants;
- per-tensor (one scale) on activations, per-channel only on constant weights, along the
  output-channel axis of the layer that reads them;
- every Q feeds DQ nodes only and every DQ reads a Q or an int8 constant (no dangling
  half of a pair), and a Q -> DQ pair shares its scale (no hidden re-quantization);
- the one int32 constant is a quantized Gemm's bias, at its input scale times its weight
  scales (ONNX's bias form, which ONNX Runtime's QGemm needs); TensorRT takes no int32 DQ,
  so its builder reads these biases folded back to float (`float_biases`, the same values);
- no per-sample weight (a MatMul input computed from the styles alone, the `folded`
  modulation form) is quantized: it could only get one per-tensor scale, and its layer
  belongs in the `activation` form with a constant, per-channel weight.

Quantized layers get no Q/DQ on their outputs: TensorRT fuses DQ -> MatMul and writes
the output in float, and ONNX Runtime turns the same pattern into MatMulIntegerToFloat
(QGemm, bias included, for a Gemm with an int32 bias), so an output Q would only add error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from creps.calib import emulate
from creps.errors import CrepsError
from creps.runtime.stages import spatial_inputs

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
LAYER_OPS = ("MatMul", "Gemm")  # the layers that carry the cost
INT8_MAX = 127  # symmetric: [-127, 127], so -x quantizes to -q
# Weights use 8 bits where the integer kernels that run the graphs are exact (TensorRT; ONNX
# Runtime on CPUs with VNNI or Arm dot products), 7 bits where they saturate beyond that
# (ONNX Runtime on x86 without VNNI: runtime/cpu.py says why). The manifest records the
# width, and the ONNX Runtime CPU backend refuses 8-bit graphs on a saturating CPU.
WEIGHT_BITS = (7, 8)


def weight_max(bits: int) -> int:
    """The largest |q| of a `bits`-wide symmetric weight (63 for 7 bits, 127 for 8)."""
    if bits not in WEIGHT_BITS:
        raise ValueError(f"int8 weights are {' or '.join(map(str, WEIGHT_BITS))} bits wide, not {bits}")
    return (1 << (bits - 1)) - 1


class QdqError(CrepsError):
    """A Q/DQ graph that breaks TensorRT's explicit-quantization rules."""


@dataclass(frozen=True)
class Layer:
    """A MatMul/Gemm that can run in INT8: its activation inputs (per-tensor) and its constant
    weight (per-channel along `axis`, the output channel), if it has one."""

    name: str
    op: str
    activations: tuple[str, ...]
    weight: str | None
    axis: int = 1


def constants(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    found = {t.name: t for t in model.graph.initializer}
    found.update({n.output[0]: n.attribute[0].t for n in model.graph.node
                  if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    return found


def weight_axis(node: onnx.NodeProto) -> int:
    """The output-channel axis of the second input: N of [K, N], or of [N, K] for Gemm with transB."""
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    return 0 if node.op_type == "Gemm" and trans_b else 1


def layers(model: onnx.ModelProto, stage: str) -> list[Layer]:
    """The stage's MatMul/Gemm layers that depend on its spatial inputs, in graph order.

    The others (styles, demodulation sums) are [N, C]-sized, cost nothing, and the
    demodulation sum of squares has a range no single int8 scale fits: never quantized.
    """
    spatial = emulate.dependent_nodes(model, spatial_inputs(stage))
    consts = constants(model)
    found = []
    for node in model.graph.node:
        if node.op_type not in LAYER_OPS or node.name not in spatial:
            continue
        a, b = node.input[0], node.input[1]
        if b in consts and len(consts[b].dims) == 2:
            found.append(Layer(node.name, node.op_type, (a,), b, weight_axis(node)))
        else:  # two activations (the pixel stage's rank-R product cols @ rows.T): both per tensor
            found.append(Layer(node.name, node.op_type, (a, b), None))
    return found


def quantize_weight(weight: np.ndarray, axis: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values in [-weight_max(bits), weight_max(bits)], float32 scales): symmetric, per channel along `axis`."""
    top = weight_max(bits)
    other = tuple(i for i in range(weight.ndim) if i != axis)
    amax = np.abs(weight).max(axis=other)  # (channels,)
    scale = np.where(amax > 0, amax / top, 1.0).astype(np.float32)
    shape = [1] * weight.ndim
    shape[axis] = -1
    q = np.clip(np.round(weight / scale.reshape(shape)), -top, top).astype(np.int8)
    return q, scale


def activation_scale(amax: float) -> np.float32:
    return np.float32(amax / INT8_MAX if amax > 0 else 1.0)


def switch_name(layer: str) -> str:
    return f"int8_switch__{layer}"


def with_qdq(model: onnx.ModelProto, chosen: list[Layer], amax: dict[str, float], weight_bits: int,
             switchable: bool = False, rounded: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """A copy of `model` with Q/DQ in front of each chosen layer's inputs.

    `amax[tensor]` is the calibrated range of each activation input (scale amax / 127);
    constant weights are `weight_bits` wide (WEIGHT_BITS), at quantize_weight's scales, their
    int8 values `rounded[weight]` where given (calib/rounding.py), else the nearest.
    With `switchable`, layer L reads its quantized inputs only when the boolean scalar
    input `switch_name(L)` is true (Where picks either value: no arithmetic on them), so
    one session measures any choice of INT8 layers; such a graph is for measuring only.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    consts = constants(model)
    by_name = {layer.name: layer for layer in chosen}
    nodes, inits = [], []
    for node in model.graph.node:
        layer = by_name.get(node.name)
        if layer is None:
            nodes.append(node)
            continue
        node = onnx.NodeProto.FromString(node.SerializeToString())
        tag = node.name
        bias = plain_bias(node, consts) if layer.weight is not None else None
        scales = {}
        for i, name in enumerate(node.input[:2]):
            q, s, z, dq = (f"{tag}__in{i}_{part}" for part in ("q", "scale", "zero", "dq"))
            if name == layer.weight:
                values, scales[i] = quantize_weight(numpy_helper.to_array(consts[name]), layer.axis, weight_bits)
                values = (rounded or {}).get(name, values)
                inits += [numpy_helper.from_array(values, q), numpy_helper.from_array(scales[i], s),
                          numpy_helper.from_array(np.zeros(scales[i].shape, np.int8), z)]
                nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [dq], name=f"{tag}__in{i}_dq",
                                              axis=layer.axis))
            else:
                scales[i] = activation_scale(amax[name])
                inits += [numpy_helper.from_array(scales[i], s), numpy_helper.from_array(np.int8(0), z)]
                nodes += [helper.make_node("QuantizeLinear", [name, s, z], [q], name=f"{tag}__in{i}_quantize"),
                          helper.make_node("DequantizeLinear", [q, s, z], [dq], name=f"{tag}__in{i}_dq")]
            node.input[i] = switched(nodes, layer, dq, name) if switchable else dq
        if bias is not None:
            q, s = f"{tag}__bias_q", f"{tag}__bias_scale"
            values, scale = quantize_bias(numpy_helper.to_array(consts[bias]), scales[0] * scales[1])
            inits += [numpy_helper.from_array(values, q), numpy_helper.from_array(scale, s)]
            nodes.append(helper.make_node("DequantizeLinear", [q, s], [f"{tag}__bias_dq"], name=f"{tag}__bias_dq",
                                          axis=0))
            node.input[2] = switched(nodes, layer, f"{tag}__bias_dq", bias) if switchable else f"{tag}__bias_dq"
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    if switchable:
        graph.input.extend(helper.make_tensor_value_info(switch_name(layer.name), TensorProto.BOOL, [])
                           for layer in chosen)
    return out


def plain_bias(node: onnx.NodeProto, consts: dict[str, onnx.TensorProto]) -> str | None:
    """The constant bias C of a Gemm computing A @ B + C (alpha = beta = 1), one value per output channel."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    bias = node.input[2] if node.op_type == "Gemm" and len(node.input) > 2 else ""
    if bias not in consts or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 \
            or attrs.get("transA", 0) or node.input[1] not in consts:
        return None
    channels = consts[node.input[1]].dims[weight_axis(node)]
    return bias if list(consts[bias].dims) == [channels] else None


def quantize_bias(bias: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A Gemm's float bias as int32 at its product's scale (input scale x weight scale, per
    output channel): ONNX's Q/DQ form of a bias, which ONNX Runtime's QGemm fusion wants (a
    float bias keeps the whole Gemm in float). TensorRT takes no int32 DQ: its builder reads
    the bias folded back to float (`float_biases`), the same values."""
    scale = np.broadcast_to(np.asarray(scale, np.float32), bias.shape).astype(np.float32)
    limit = np.iinfo(np.int32).max
    return np.clip(np.rint(bias / scale), -limit, limit).astype(np.int32), scale


def float_biases(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every DQ of an int32 constant (a `quantize_bias` bias) replaced by its
    float value: what TensorRT's Q/DQ rules take, and the same function."""
    consts = constants(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept, folded, dropped = [], [], set()
    for node in out.graph.node:
        data = node.input[0] if node.op_type == "DequantizeLinear" else None
        if data in consts and consts[data].data_type == TensorProto.INT32:
            values = numpy_helper.to_array(consts[data]).astype(np.float32) * numpy_helper.to_array(consts[node.input[1]])
            folded.append(numpy_helper.from_array(values, node.output[0]))
            dropped.update(node.input)
        else:
            kept.append(node)
    read = {name for node in kept for name in node.input}
    inits = [t for t in out.graph.initializer if t.name not in dropped or t.name in read]  # no dead int32 left
    del out.graph.node[:], out.graph.initializer[:]
    out.graph.node.extend(kept)
    out.graph.initializer.extend(inits + folded)
    return out


def switched(nodes: list, layer: Layer, quantized: str, exact: str) -> str:
    """A switchable graph's choice between a layer input's quantized and exact values (Where
    picks one: no arithmetic on them)."""
    nodes.append(helper.make_node("Where", [switch_name(layer.name), quantized, exact], [f"{quantized}__pick"],
                                  name=f"{quantized}__switch"))
    return f"{quantized}__pick"


def switches(chosen: list[Layer], on: set[str]) -> dict[str, np.ndarray]:
    """Feeds for a switchable graph: layer L reads INT8 inputs when L is in `on`."""
    return {switch_name(layer.name): np.array(layer.name in on) for layer in chosen}


# ---- the rule checker -----------------------------------------------------------------------

def _computed_from(model: onnx.ModelProto, sources: set[str]) -> set[str]:
    """Tensors computed from `sources` only (graph order is topological)."""
    found = set(sources)
    for node in model.graph.node:
        if node.input and all(not i or i in found for i in node.input):
            found.update(node.output)
    return found


def _pair_violations(node, consts, producers, consumers) -> list[str]:
    problems = []
    data, scale = node.input[0], node.input[1]
    zero = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if scale not in consts:
        return [f"{node.name}: scale {scale} is not a constant"]
    scales = numpy_helper.to_array(consts[scale])
    if consts[scale].data_type != TensorProto.FLOAT:
        problems.append(f"{node.name}: scale type {TensorProto.DataType.Name(consts[scale].data_type)}, not float32")
    if not (np.all(np.isfinite(scales)) and np.all(scales > 0)):
        problems.append(f"{node.name}: scale not positive and finite")
    if zero is None:
        dtype = next((a.i for a in node.attribute if a.name == "output_dtype"), 0)
        if node.op_type == "QuantizeLinear" and dtype != TensorProto.INT8:
            problems.append(f"{node.name}: no zero point, so it quantizes to uint8; TensorRT needs int8")
    elif zero not in consts:
        problems.append(f"{node.name}: zero point {zero} is not a constant")
    else:
        zp = consts[zero]
        if zp.data_type != TensorProto.INT8:
            problems.append(f"{node.name}: zero point type {TensorProto.DataType.Name(zp.data_type)}, "
                            "TensorRT needs int8")
        if np.any(numpy_helper.to_array(zp) != 0):
            problems.append(f"{node.name}: non-zero zero point (asymmetric)")
    if node.op_type == "QuantizeLinear":
        bad = [c for c in consumers.get(node.output[0], []) if c.op_type != "DequantizeLinear"]
        if bad or node.output[0] not in consumers:
            problems.append(f"{node.name}: its int8 output feeds {', '.join(c.op_type for c in bad) or 'nothing'}, "
                            "not a DequantizeLinear (missing DQ)")
        for dq in consumers.get(node.output[0], []):
            if dq.op_type == "DequantizeLinear" and dq.input[1] in consts and not np.array_equal(
                    numpy_helper.to_array(consts[dq.input[1]]), scales):
                problems.append(f"{node.name} -> {dq.name}: the pair's scales differ")
    elif data not in consts and (data not in producers or producers[data].op_type != "QuantizeLinear"):
        problems.append(f"{node.name}: dequantizes {data}, which is neither a QuantizeLinear output nor an "
                        "int8 constant (missing Q)")
    elif data in consts and consts[data].data_type == TensorProto.INT32:
        problems += _bias_violations(node, consts, producers, consumers)
    elif data in consts and consts[data].data_type != TensorProto.INT8:
        problems.append(f"{node.name}: constant {data} is {TensorProto.DataType.Name(consts[data].data_type)}, "
                        "not int8")
    return problems


def _bias_violations(node, consts, producers, consumers) -> list[str]:
    """An int32 constant is dequantized only as the bias of a Gemm whose two inputs are
    dequantized, at their scales' product (what TensorRT's builder gets back as float)."""
    users = consumers.get(node.output[0], [])
    if len(users) != 1 or users[0].op_type != "Gemm" or list(users[0].input[2:3]) != [node.output[0]]:
        return [f"{node.name}: an int32 constant dequantized for {', '.join(u.op_type for u in users) or 'nothing'}, "
                "not as one Gemm's bias"]
    gemm = users[0]
    sources = [producers.get(i) for i in gemm.input[:2]]
    if any(s is None or s.op_type != "DequantizeLinear" or s.input[1] not in consts for s in sources):
        return [f"{node.name}: bias of {gemm.name}, whose inputs are not both dequantized"]
    product = np.multiply(*(numpy_helper.to_array(consts[s.input[1]]) for s in sources), dtype=np.float32)
    scale = numpy_helper.to_array(consts[node.input[1]])
    if not np.array_equal(np.broadcast_to(product, scale.shape), scale):
        return [f"{node.name}: bias scale of {gemm.name} is not its input scale times its weight scales"]
    return []


def violations(model: onnx.ModelProto, stage: str | None = None) -> list[str]:
    """Every way the graph's Q/DQ nodes break TensorRT's rules (empty when it follows them).

    With `stage`, a quantized MatMul/Gemm input that depends on none of the stage's spatial
    inputs and is not constant (a per-sample weight of the folded form) is a violation too.
    """
    consts = constants(model)
    folded = _computed_from(model, set(consts))  # e.g. DQ(int8 W): constant weights too
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    problems = []
    for node in model.graph.node:
        if node.op_type not in QDQ_OPS:
            continue
        problems += _pair_violations(node, consts, producers, consumers)
        scale = node.input[1]
        if scale not in consts or numpy_helper.to_array(consts[scale]).size <= 1:
            continue
        data = node.input[0]
        if data not in folded:
            problems.append(f"{node.name}: per-channel scales on {data}, which is not a constant weight")
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        for layer in consumers.get(node.output[0], []) if node.op_type == "DequantizeLinear" else ():
            if layer.op_type in LAYER_OPS and layer.input[1] == node.output[0] and axis != weight_axis(layer):
                problems.append(f"{node.name}: per-channel axis {axis}, but {layer.name}'s output channels are "
                                f"axis {weight_axis(layer)}")
    if stage is not None:
        dequantized = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
        moving = emulate.dependent_nodes(model, spatial_inputs(stage))
        spatial = spatial_inputs(stage) | {o for n in model.graph.node if n.name in moving for o in n.output}
        for node in model.graph.node:
            for i in node.input[:2] if node.op_type in LAYER_OPS else ():
                if i in dequantized and i not in folded and i not in spatial:
                    problems.append(f"{node.name}: input {i} is a per-sample weight (computed from the styles, the "
                                    "folded form), quantized per tensor; export the activation form")
    return problems


def check(model: onnx.ModelProto, stage: str | None = None) -> None:
    problems = violations(model, stage)
    if problems:
        raise QdqError(f"Q/DQ graph breaks TensorRT's rules: {'; '.join(problems[:5])}"
                       + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))


def summary(model: onnx.ModelProto) -> dict:
    """Q/DQ node count; MatMul/Gemm layers, those in int8 (both inputs dequantized), and among
    those the ones with a constant weight (per-channel scales) and the products of two
    activations (per-tensor, like the pixel stage's rank-R outer product)."""
    sizes = {name: numpy_helper.to_array(t).size for name, t in constants(model).items()}
    producers = {o: n for n in model.graph.node for o in n.output}
    all_layers = [n for n in model.graph.node if n.op_type in LAYER_OPS]
    int8_layers = [n for n in all_layers if all(i in producers and producers[i].op_type == "DequantizeLinear"
                                                for i in n.input[:2])]
    weights = [n for n in int8_layers if producers[n.input[1]].input[0] in sizes]
    per_channel = [n for n in weights if sizes.get(producers[n.input[1]].input[1], 1) > 1]
    return {"qdq_nodes": sum(1 for n in model.graph.node if n.op_type in QDQ_OPS), "layers": len(all_layers),
            "int8_layers": len(int8_layers), "int8_constant_weight_layers": len(weights),
            "int8_per_channel_weight_layers": len(per_channel),
            "int8_activation_products": len(int8_layers) - len(weights)}
