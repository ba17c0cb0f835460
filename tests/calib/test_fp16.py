"""FP16 analysis on a tiny bundle: islands where the maths says, prediction vs real FP16 graphs."""

import math

import numpy as np
import pytest

from calib_jobs import JOBS
from creps.calib import emulate, fp16
from creps.calib.samples import StageRunner, compare


@pytest.fixture(scope="module")
def plan(tiny_models):
    return fp16.analyse(tiny_models, JOBS, probe=12)


def test_style_path_and_fourier_phases_stay_fp32(plan, tiny_models):
    lines = tiny_models["lines"]
    spatial = emulate.dependent_nodes(lines, {"ys", "xs"})
    # Everything computed from ws alone (styles, demodulation, folded weights) is FP32.
    assert not set(plan.fp16_nodes["lines"]) - spatial
    # The sines' arguments (phases up to hundreds of radians) are FP32: an FP16 phase is off by ~0.25 rad.
    producers = {o: n for n in lines.graph.node for o in n.output}
    sines = [n for n in lines.graph.node if n.op_type == "Sin"]
    assert sines
    for sin in sines:
        assert sin.input[0] in producers and producers[sin.input[0]].name in plan.fp32_nodes["lines"]
    reasons = {s.fp32_reason for s in plan.stats if s.fp32_reason}
    assert "phase" in reasons and reasons <= {"phase", "range", "error"}
    phases = [s for s in plan.stats if s.fp32_reason == "phase"]
    assert {s.op for s in phases} >= {"Sin", "Mul"} and max(s.max_abs for s in phases) > 50  # radians
    summary = plan.summary()
    assert summary["fp16_node_count"]["pixels"] > 0 and summary["fp32_compute_nodes"]


def test_prediction_meets_the_bar_and_zero_fp16_is_exact(plan, tiny_models):
    predicted = fp16.predict(tiny_models, plan, JOBS)
    assert predicted["worst"]["max_abs"] <= 1e-2 and predicted["worst"]["psnr_db"] >= 45
    none = fp16.Fp16Plan({"lines": [], "pixels": []}, {}, [])
    exact = fp16.predict(tiny_models, none, JOBS)
    assert exact["worst"]["max_abs"] == 0 and exact["worst"]["psnr_db"] is None
    everything = fp16.Fp16Plan({s: sorted(emulate.dependent_nodes(tiny_models[s], fp16.SPATIAL_INPUTS[s]))
                                for s in fp16.FP16_STAGES}, {}, [])
    assert fp16.predict(tiny_models, everything, JOBS)["worst"]["max_abs"] > 3 * predicted["worst"]["max_abs"]


def test_real_fp16_graphs_agree_with_the_prediction(plan, tiny_models):
    graphs = {s: fp16.to_fp16(tiny_models[s], plan.fp16_nodes[s]) for s in fp16.FP16_STAGES}
    reference, real = StageRunner(tiny_models), StageRunner({**tiny_models, **graphs})
    predicted = fp16.predict(tiny_models, plan, JOBS)
    for job, want in zip(JOBS, predicted["jobs"]):
        got = compare(reference.image(job), real.image(job))
        # ONNX Runtime's CPU FP16 kernels also round inside MatMuls: same order of error.
        assert got["max_abs"] <= 4 * want["max_abs"] + 2e-3
        assert got["psnr_db"] >= 40


def test_psnr_definition():
    ref = np.zeros((1, 3, 4, 5), np.float32)
    err = compare(ref, ref + 0.02)
    assert err["psnr_db"] == pytest.approx(10 * math.log10(4 / 0.02**2), abs=0.01)  # 40 dB
    assert err["max_abs"] == pytest.approx(0.02) and err["uint8_pixels_changed"] <= 1
