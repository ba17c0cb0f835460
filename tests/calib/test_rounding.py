"""Weight rounding for the layer's inputs (calib/rounding.py) against a plain least-squares
formulation of the same procedure, and what it does to a layer's output error."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from creps.calib import qdq, rounding


def correlated_inputs(rng, rows: int, channels: int) -> np.ndarray:
    """Inputs whose channels move together, as a layer's do (a few shared factors plus noise)."""
    factors = rng.standard_normal((rows, 3)) @ rng.standard_normal((3, channels))
    return (factors + 0.3 * rng.standard_normal((rows, channels))).astype(np.float32)


def damped(moment: np.ndarray, damp: float) -> np.ndarray:
    return moment + damp * np.mean(np.diag(moment)) * np.eye(len(moment))


def sequential_least_squares(weight: np.ndarray, bits: int, moment: np.ndarray, damp: float) -> np.ndarray:
    """The same rounding, written as it is defined: input channel i is rounded to nearest once
    the channels after it have been refitted, by least squares under the moments, to cancel
    the error of the channels before it (weight (in, out), scales of nearest rounding)."""
    _, scale = qdq.quantize_weight(weight, 1, bits)
    top, m = qdq.weight_max(bits), damped(moment.astype(np.float64), damp)
    w = weight.astype(np.float64)
    q = np.zeros(w.shape, np.int64)
    for i in range(len(w)):
        done, rest = slice(0, i), slice(i, len(w))
        error = q[done] * scale - w[done]
        refit = w[rest] - np.linalg.solve(m[rest, rest], m[rest, done] @ error)
        q[i] = np.clip(np.round(refit[0] / scale), -top, top)
    return q


@pytest.mark.parametrize("channels, outputs, bits", [(7, 5, 8), (12, 3, 7), (9, 9, 8)])
def test_rounding_is_the_sequential_least_squares_fit(channels, outputs, bits):
    rng = np.random.default_rng(channels)
    weight = rng.standard_normal((channels, outputs)).astype(np.float32)
    moment = rounding.moments(correlated_inputs(rng, 200, channels))
    found = rounding.round_weight(weight, 1, bits, moment, damp=0.05)
    assert found.dtype == np.int8
    np.testing.assert_array_equal(found, sequential_least_squares(weight, bits, moment, 0.05))
    # a Gemm's [out, in] weight (output channels on axis 0) rounds the same
    np.testing.assert_array_equal(rounding.round_weight(weight.T.copy(), 0, bits, moment, damp=0.05), found.T)


def test_uncorrelated_inputs_round_every_weight_to_nearest():
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((10, 4)).astype(np.float32)
    moment = np.diag(rng.uniform(0.5, 2.0, 10))  # no two channels move together: nothing to cancel
    nearest, _ = qdq.quantize_weight(weight, 1, 8)
    np.testing.assert_array_equal(rounding.round_weight(weight, 1, 8, moment), nearest)


def test_rounding_for_the_inputs_shrinks_the_output_error_on_inputs_it_never_saw():
    rng = np.random.default_rng(4)
    channels, outputs = 64, 16
    weight = rng.standard_normal((channels, outputs)).astype(np.float32)
    mix = rng.standard_normal((3, channels))
    def inputs(rows):
        return (rng.standard_normal((rows, 3)) @ mix + 0.3 * rng.standard_normal((rows, channels))).astype(np.float32)

    rounded = rounding.round_weight(weight, 1, 7, rounding.moments(inputs(4000)))
    nearest, scale = qdq.quantize_weight(weight, 1, 7)
    assert np.abs(rounded.astype(int) - nearest).max() <= 2 and np.abs(rounded).max() <= 63
    new = inputs(2000)
    error = {name: float(np.mean((new @ (q * scale - weight)) ** 2)) for name, q in
             (("nearest", nearest), ("rounded", rounded))}
    assert error["rounded"] < 0.5 * error["nearest"], error


def test_an_input_channel_that_is_always_zero_keeps_its_nearest_weights():
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((6, 3)).astype(np.float32)
    x = correlated_inputs(rng, 100, 6)
    x[:, 2] = 0
    found = rounding.round_weight(weight, 1, 8, rounding.moments(x))
    nearest, _ = qdq.quantize_weight(weight, 1, 8)
    assert found[2].tolist() == nearest[2].tolist()


def test_the_qdq_graph_carries_the_given_integers_at_nearest_rounding_scales():
    rng = np.random.default_rng(6)
    weight = rng.standard_normal((16, 6)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name="layer")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(weight, "W")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    layer = qdq.Layer("layer", "MatMul", ("x",), "W", 1)
    x = correlated_inputs(rng, 300, 16)
    rounded = rounding.rounded_weights(model, [layer], {"x": rounding.moments(x)}, 7)
    quantized = qdq.with_qdq(model, [layer], {"x": float(np.abs(x).max())}, 7, rounded=rounded)
    qdq.check(quantized)
    _, scale = qdq.quantize_weight(weight, 1, 7)  # 7 bits: exact in ONNX Runtime on every x86 CPU
    x_scale = np.float32(np.abs(x).max() / 127)
    want = (np.clip(np.round(x / x_scale), -127, 127) * x_scale) @ (rounded["W"] * scale)
    session = ort.InferenceSession(quantized.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["y"], {"x": x})[0], want, rtol=1e-4, atol=1e-4)
