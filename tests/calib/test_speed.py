"""calib/speed.py: a stage's INT8 graph timed against its exported FP32 graph; the plan keeps INT8
only in the stages where it runs faster (calib/sensitivity.py Search.settle)."""

import threading
import time

import pytest

from calib_jobs import JOBS
from creps.calib import int8, qdq, speed

PROBE = 48


def test_each_stage_is_timed_in_both_precisions(tiny_models):
    timings = speed.stage_speedups(tiny_models, tiny_models, JOBS[0])  # the same graphs twice
    assert set(timings) == {"lines", "pixels"}
    for t in timings.values():
        assert 0 < t["fp32_seconds"] < 10 and 0 < t["int8_seconds"] < 10
        assert t["speedup"] == pytest.approx(t["fp32_seconds"] / t["int8_seconds"])


class SleepingSession:
    """An onnxruntime.InferenceSession's run(output_names, feeds) that takes `seconds` and counts
    the calls running at once."""

    def __init__(self, seconds: float):
        self.seconds, self.running, self.most, self.calls = seconds, 0, 0, 0
        self.lock = threading.Lock()

    def run(self, output_names, feeds):
        with self.lock:
            self.running += 1
            self.calls += 1
            self.most = max(self.most, self.running)
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        return [feeds["x"]]


@pytest.mark.parametrize("calls", [1, 2, 3])
def test_calls_are_timed_together_as_the_cpu_backend_makes_them(calls):
    session = SleepingSession(0.05)
    seconds = speed.best_seconds(session, {"x": 1}, calls)
    assert session.most == calls and session.calls == calls * (speed.REPEATS + 1)  # one round warms
    assert 0.05 <= seconds < 0.09  # at once: one after another, two would take 0.1 s


class LoggedSession(SleepingSession):
    """A SleepingSession that writes its name into a shared log at each call."""

    def __init__(self, seconds: float, name: str, log: list):
        super().__init__(seconds)
        self.name, self.log = name, log

    def run(self, output_names, feeds):
        self.log.append(self.name)
        return super().run(output_names, feeds)


@pytest.mark.parametrize("calls", [1, 2])
def test_sessions_timed_together_take_turns_each_round(calls):
    log = []
    slow, fast = LoggedSession(0.04, "slow", log), LoggedSession(0.01, "fast", log)
    seconds = speed.alternated_best_seconds([slow, fast], {"x": 1}, calls)
    rounds = [log[i:i + 2 * calls] for i in range(0, len(log), 2 * calls)]
    assert len(rounds) == speed.REPEATS + 1  # one round warms
    assert all(r == ["slow"] * calls + ["fast"] * calls for r in rounds)
    assert 0.04 <= seconds[0] < 0.07 and 0.01 <= seconds[1] < 0.035


@pytest.mark.parametrize("pixels_speedup, kept", [(2.0, ["lines", "pixels"]), (0.9, ["lines"])])
def test_a_stage_whose_int8_is_not_faster_leaves_the_plan(tiny_models, activation_models, monkeypatch,
                                                          pixels_speedup, kept):
    """As timed here (a stand-in for the clock): the pixel stage at 0.9x leaves the plan, whose
    curve is remade over the line layers alone, and its graph is the exported one."""
    timed = []

    def stage_speedups(exported, quantized, job):
        assert exported is tiny_models
        timed.append({s: qdq.summary(m)["int8_layers"] for s, m in quantized.items()})
        return {"lines": {"speedup": 2.0}, "pixels": {"speedup": pixels_speedup}}

    monkeypatch.setattr(speed, "stage_speedups", stage_speedups)
    quantized, plan = int8.calibrate(activation_models, JOBS, probe=PROBE, target_psnr=None, range_seeds=2,
                                     plan_seeds=0, exported=tiny_models)
    assert plan["int8_stages"] == kept and plan["stage_speed"]["pixels"]["speedup"] == pixels_speedup
    assert timed[0]["lines"] > 0 and timed[0]["pixels"] > 0  # the first plan had both stages in INT8
    pixel_layers = {f"pixels/{layer.name}" for layer in qdq.layers(activation_models["pixels"], "pixels")}
    if kept == ["lines"]:
        assert len(timed) == 2 and timed[1]["pixels"] == 0  # timed again without the pixel stage
        assert pixel_layers <= set(plan["float_layers"]) and qdq.summary(quantized["pixels"])["int8_layers"] == 0
        assert all(c["added"].startswith("lines/") for c in plan["curve"])
    else:
        assert len(timed) == 1 and plan["float_layers"] == []
