"""FP16 emulation and FP16 graphs on a hand-built graph, against numpy float16 rounding."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from creps.calib import emulate
from creps.calib.fp16 import to_fp16

RNG = np.random.default_rng(0)
W = (RNG.standard_normal((8, 5)) * 3).astype(np.float32)
B = RNG.standard_normal(5).astype(np.float32)


def graph() -> onnx.ModelProto:
    """x [N, 8] -> Reshape -> MatMul W -> Add b -> Mul s (s [N, 1] from the style input only) -> y."""
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["xr"], name="reshape_x"),
        helper.make_node("MatMul", ["xr", "W"], ["h"], name="mm"),
        helper.make_node("Add", ["h", "b"], ["hb"], name="add"),
        helper.make_node("Mul", ["style", "two"], ["s"], name="style_scale"),
        helper.make_node("Mul", ["hb", "s"], ["y"], name="mul"),
    ]
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "b"),
             numpy_helper.from_array(np.array([-1, 8], np.int64), "shape"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8]),
                                       helper.make_tensor_value_info("style", TensorProto.FLOAT, ["n", 1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def run(model, x, style, **extra):
    return emulate.session(model).run(["y"], {"x": x, "style": style, **extra})[0]


def half(a):
    return a.astype(np.float16).astype(np.float32)


X = (RNG.standard_normal((6, 8)) * 40).astype(np.float32)
STYLE = RNG.uniform(0.5, 2, (6, 1)).astype(np.float32)


def test_rounding_matches_numpy_float16():
    model = emulate.with_fp16_rounding(graph(), {"mm", "add"})
    h = half(half(half(X) @ half(W)) + half(B))  # mm reads and writes FP16; add too
    want = h * (STYLE * 2)
    got = run(model, X, STYLE)
    ulp = np.abs(h) * 2.0**-10 * np.abs(STYLE * 2)  # float32 accumulation order may flip one rounding
    assert np.all(np.abs(got - want) <= ulp + 1e-6)
    assert np.any(got != run(graph(), X, STYLE))


def test_no_fp16_nodes_is_exact_and_switches_off_is_exact():
    exact = run(graph(), X, STYLE)
    np.testing.assert_array_equal(run(emulate.with_fp16_rounding(graph(), set()), X, STYLE), exact)
    switchable = emulate.with_fp16_rounding(graph(), ["mm", "add", "mul"], switchable=True)
    np.testing.assert_array_equal(run(switchable, X, STYLE, **emulate.switches(3, set())), exact)
    for k, name in enumerate(["mm", "add", "mul"]):
        np.testing.assert_array_equal(run(switchable, X, STYLE, **emulate.switches(3, {k})),
                                      run(emulate.with_fp16_rounding(graph(), {name}), X, STYLE))


def test_dependency_and_movement_rules():
    model = graph()
    assert emulate.dependent_nodes(model, {"x"}) == {"reshape_x", "mm", "add", "mul"}
    assert [n.name for n in emulate.compute_nodes(model, {"reshape_x", "mm", "add"})] == ["mm", "add"]
    # A Reshape of a graph input stays FP32 (coordinates are never rounded before their first FP32 use).
    assert emulate.with_movement_nodes(model, {"mm", "add"}) == {"mm", "add"}


def test_fp16_graph_runs_and_matches_the_emulation():
    fp16 = to_fp16(graph(), ["mm", "add"])
    types = {i.name: i.type.tensor_type.elem_type for i in [*fp16.graph.input, *fp16.graph.output]}
    assert types == {"x": TensorProto.FLOAT, "style": TensorProto.FLOAT, "y": TensorProto.FLOAT}
    inits = {t.name: t.data_type for t in fp16.graph.initializer}
    assert inits["W__fp16"] == TensorProto.FLOAT16 and inits["two"] == TensorProto.FLOAT  # style path stays FP32
    got = run(fp16, X, STYLE)
    emulated = run(emulate.with_fp16_rounding(graph(), {"mm", "add"}), X, STYLE)
    # ONNX Runtime's CPU FP16 MatMul accumulates in FP16: allow a few ulps of the summed magnitudes.
    scale = (np.abs(X) @ np.abs(W) + np.abs(B)) * np.abs(STYLE * 2)
    assert np.all(np.abs(got - emulated) <= 4 * 2.0**-10 * scale)


@pytest.mark.parametrize("nodes", [["mm"], ["mul"], ["mm", "add", "mul"]])
def test_fp16_graph_output_stays_float32_whatever_the_islands(nodes):
    fp16 = to_fp16(graph(), nodes)
    out = emulate.session(fp16).run(None, {"x": X, "style": STYLE})[0]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, run(graph(), X, STYLE), rtol=1e-2, atol=0.5)
