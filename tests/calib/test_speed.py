"""calib/speed.py: each stage's every-layer INT8 graph timed against its exported FP32 graph, and the stages INT8 keeps."""

import math

import pytest

from calib_jobs import JOBS
from creps.calib import qdq, speed


def test_each_stage_is_timed_in_both_precisions(tiny_models, activation_models):
    timings = speed.stage_speedups(tiny_models, tiny_models, JOBS[0])  # the same graphs twice
    assert set(timings) == {"lines", "pixels"}
    for t in timings.values():
        assert 0 < t["fp32_seconds"] < 10 and 0 < t["int8_seconds"] < 10
        assert t["speedup"] == pytest.approx(t["fp32_seconds"] / t["int8_seconds"])


@pytest.mark.parametrize("least, kept", [(0.0, ("lines", "pixels")), (math.inf, ())])
def test_a_stage_stays_int8_only_at_the_least_speedup(tiny_models, activation_models, monkeypatch, least, kept):
    timed = {}

    def stage_speedups(exported, quantized, job):
        timed.update(quantized)
        return {s: {"fp32_seconds": 1.0, "int8_seconds": 0.5, "speedup": 2.0} for s in quantized}

    monkeypatch.setattr(speed, "stage_speedups", stage_speedups)
    monkeypatch.setattr(speed, "MIN_SPEEDUP", least)
    stages, timings = speed.fast_stages(tiny_models, activation_models, 8, JOBS[0])
    assert stages == kept and set(timings) == {"lines", "pixels"}
    for stage, model in timed.items():  # what is timed: every layer of the stage in INT8, by the rules
        qdq.check(model, stage)
        assert qdq.summary(model)["int8_layers"] == len(qdq.layers(activation_models[stage], stage)) > 0
