"""INT8 as explicit Q/DQ: calibrated on the CPU with ONNX Runtime, checked against TensorRT's rules.

Tool: ONNX Runtime's `quantize_static` in QDQ format (kept with ONNX Runtime, already a
dependency; NVIDIA ModelOpt's ONNX quantizer needs onnxruntime-gpu/cupy extras that do
not install on a CPU-only machine). Settings are TensorRT's explicit-quantization rules:
int8 with zero point 0 (symmetric activations and weights), per-tensor scales for
activations, per-channel scales only on constant weights. Only MatMul/Gemm layers are
quantized (they carry the cost); everything else stays float.

The graphs must be in the `activation` modulation form, ((x * s) @ W.T) * d, so that W is
a constant initializer with per-channel scales; in the `folded` form the weight is
computed per sample and could only get one per-tensor scale.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from creps.calib import emulate
from creps.calib.samples import DEFAULT_JOBS, Job, StageRunner, compare, worst
from creps.errors import CrepsError
from creps.runtime.stages import spatial_inputs

log = logging.getLogger(__name__)

INT8_STAGES = ("lines", "pixels")
CALIBRATION_PROBE = 48  # rows and columns per job fed to the calibrator
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
QUANTIZED_OPS = ("MatMul", "Gemm")  # the layers that carry the cost


class QdqError(CrepsError):
    """A Q/DQ graph that breaks TensorRT's explicit-quantization rules."""


def calibration_feeds(models: dict[str, onnx.ModelProto], jobs: tuple[Job, ...], probe: int) -> dict[str, list]:
    """Per stage, the input dicts of the FP32 pipeline on the jobs' probe grids."""
    runner = StageRunner(models)
    feeds = {"lines": [], "pixels": []}
    for job in jobs:
        ws = runner.ws(job)
        ys, xs = job.coords(probe)
        cols, rows = runner.lines(ws, ys, xs)
        feeds["lines"].append({"ws": ws, "ys": ys, "xs": xs})
        feeds["pixels"].append({"ws": ws, "cols": cols, "rows": rows})
    return feeds


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over a list of input dicts."""

    def __init__(self, feeds: list[dict]):
        self.items = iter(feeds)

    def get_next(self):
        return next(self.items, None)


class _PreprocessingAdvice(logging.Filter):
    """Drops quantize_static's "Please consider (to run) pre-processing" warnings (two per graph, with links).

    The pre-processing it advises (onnxruntime.quantization.shape_inference.quant_pre_process:
    symbolic shape inference and ONNX Runtime's basic graph optimisation) does nothing to
    our graphs, which the exporter has already shape-inferred and constant-folded: on the
    test model's line and pixel graphs it keeps every node, name for name, and the Q/DQ
    graphs and their error (34.13 dB) come out the same. So there is nothing to advise.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Please consider")


@contextlib.contextmanager
def _without_preprocessing_advice():
    root = logging.getLogger()  # ONNX Runtime's quantizer logs with logging.warning, on the root logger
    advice = _PreprocessingAdvice()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def quantize(model: onnx.ModelProto, feeds: list[dict], exclude: list[str] = ()) -> onnx.ModelProto:
    """The Q/DQ version of one stage graph, calibrated (min-max) on `feeds`."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    # QuantizeBias off: ONNX Runtime would store biases as int32 with int32 zero points,
    # which is not a TensorRT Q/DQ pattern (check_qdq refuses it); biases stay float.
    with tempfile.TemporaryDirectory() as tmp, _without_preprocessing_advice():
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, src)
        quantize_static(
            str(src), str(dst), _Reader(feeds), quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=list(exclude),
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        )
        quantized = onnx.load(dst)
    check_qdq(quantized)
    return quantized


def qdq_violations(model: onnx.ModelProto) -> list[str]:
    """Every way the graph's Q/DQ nodes break TensorRT's rules (empty when it follows them)."""
    constants = {t.name: t for t in model.graph.initializer}
    constants.update({n.output[0]: n.attribute[0].t for n in model.graph.node
                      if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    # Values computed from constants only (e.g. Q(W) -> DQ) are constant weights too.
    folded = set(constants)
    for node in model.graph.node:
        if all(not i or i in folded for i in node.input):
            folded.update(node.output)
    problems = []
    for node in model.graph.node:
        if node.op_type not in QDQ_OPS:
            continue
        data, scale = node.input[0], node.input[1]
        zero = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if scale not in constants:
            problems.append(f"{node.name}: scale {scale} is not a constant")
            continue
        if zero is not None:
            if zero not in constants:
                problems.append(f"{node.name}: zero point {zero} is not a constant")
            else:
                zp = constants[zero]
                if zp.data_type != onnx.TensorProto.INT8:
                    problems.append(f"{node.name}: zero point type {onnx.TensorProto.DataType.Name(zp.data_type)}, "
                                    "TensorRT needs int8")
                if np.any(numpy_helper.to_array(zp) != 0):
                    problems.append(f"{node.name}: non-zero zero point (asymmetric)")
        per_channel = numpy_helper.to_array(constants[scale]).size > 1
        if per_channel and data not in folded:
            problems.append(f"{node.name}: per-channel scales on {data}, which is not a constant weight")
    return problems


def check_qdq(model: onnx.ModelProto) -> None:
    problems = qdq_violations(model)
    if problems:
        raise QdqError(f"Q/DQ graph breaks TensorRT's rules: {'; '.join(problems[:5])}"
                       + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))


def qdq_summary(model: onnx.ModelProto) -> dict:
    """Q/DQ node count; MatMul/Gemm layers, those in int8 (both inputs dequantized), and
    among those the ones with a constant weight (per-channel scales) and the products of
    two activations (per-tensor, like the pixel stage's rank-R outer product)."""
    constants = {t.name: numpy_helper.to_array(t).size for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    layers = [n for n in model.graph.node if n.op_type in QUANTIZED_OPS]
    int8_layers = [n for n in layers if all(i in producers and producers[i].op_type == "DequantizeLinear"
                                            for i in n.input[:2])]
    weights = [n for n in int8_layers if producers[n.input[1]].input[0] in constants]
    per_channel = [n for n in weights if constants.get(producers[n.input[1]].input[1], 1) > 1]
    return {"qdq_nodes": sum(1 for n in model.graph.node if n.op_type in QDQ_OPS), "layers": len(layers),
            "int8_layers": len(int8_layers), "int8_constant_weight_layers": len(weights),
            "int8_per_channel_weight_layers": len(per_channel),
            "int8_activation_products": len(int8_layers) - len(weights)}


def style_path_nodes(model: onnx.ModelProto, stage: str) -> list[str]:
    """Nodes that do not depend on the spatial inputs: styles and demodulation, [N, C]-sized.

    They cost nothing and the demodulation sum of squares has a range no single int8
    scale fits, so they are never quantized.
    """
    spatial = emulate.dependent_nodes(model, spatial_inputs(stage))
    return [n.name for n in model.graph.node if n.name not in spatial]


def calibrate(models: dict[str, onnx.ModelProto], jobs: tuple[Job, ...] = DEFAULT_JOBS,
              probe: int = CALIBRATION_PROBE,
              exclude: dict[str, list[str]] | None = None) -> dict[str, onnx.ModelProto]:
    """Q/DQ graphs of the line and pixel stages, calibrated on the jobs (style path and
    the nodes in `exclude` kept in float)."""
    feeds = calibration_feeds(models, jobs, probe)
    exclude = exclude or {}
    return {stage: quantize(models[stage], feeds[stage],
                            style_path_nodes(models[stage], stage) + list(exclude.get(stage, [])))
            for stage in INT8_STAGES}


def measure(models: dict[str, onnx.ModelProto], quantized: dict[str, onnx.ModelProto],
            jobs: tuple[Job, ...] = DEFAULT_JOBS, probe: int | None = None) -> dict:
    """Error of the Q/DQ graphs run in ONNX Runtime CPU against FP32, per job and worst."""
    reference, int8 = StageRunner(models), StageRunner({**models, **quantized})
    per_job = []
    for job in jobs:
        error = compare(reference.image(job, probe), int8.image(job, probe))
        per_job.append({**job.to_dict(), **error})
        log.info("int8 measured error, %s: %s", job.label, error)
    return {"worst": worst(per_job), "jobs": per_job}
