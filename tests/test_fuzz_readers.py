"""The fuzz harness itself (tests/fuzz_readers.py) can fail: an untyped exception, a hang and
a payload's marker file are each reported, with the index that reproduces them; and it
reproduces: one seed, the same mutants. The fuzz runs over real readers live next to the
readers' own tests (tests/test_fuzz_checkpoint.py, test_fuzz_original.py,
tests/runtime/test_fuzz_bundle.py)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import fuzz_readers as fz
from creps.errors import BundleError

FUZZER = Path(fz.__file__)


def run_fuzzer(reader: str, inputs: int, seed: int, timeout: float, *extra: str) -> dict:
    """The fuzz loop in a child process with a wall-clock limit: a hang inside C code, which
    the per-input timer cannot interrupt, or a crash of the interpreter still fails the test."""
    done = subprocess.run([sys.executable, str(FUZZER), "--reader", reader, "--inputs", str(inputs),
                           "--seed", str(seed), *extra], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"fuzzer died (rc {done.returncode}, seed {seed}): {done.stderr[-2000:]}"
    return json.loads(done.stdout)


def assert_clean(summary: dict) -> None:
    """Every input answered by a typed error or a load; the seed is in the message to rerun it."""
    where = f"{summary['reader']} seed {summary['seed']} (rerun: tests/fuzz_readers.py --seed S --only INDEX)"
    assert not summary["tracebacks"], f"{where}: {summary['tracebacks']}"
    assert not summary["hangs"], f"{where}: hangs at {summary['hangs']}"
    assert not summary["code_run"], f"{where}: code ran at {summary['code_run']}"


def test_findings_are_reported_with_their_index(tmp_path):
    marker = tmp_path / "ran"

    def target(n):
        if n == 1:
            raise TypeError("an untyped failure")
        if n == 2:
            while True:
                pass
        if n == 3:
            marker.write_text("ran")
        if n == 4:
            raise BundleError("a typed refusal")
        if n == 5:
            raise BundleError("a typed refusal\nthat spans lines")

    summary = fz.fuzz("fake", target, lambda rng: rng.randrange(6), 60, seed=4, marker=marker,
                      timeout=0.2)
    counts = summary.outcomes
    assert summary.inputs == 60 and sum(counts.values()) == 60
    assert set(counts) == {"loaded", "traceback", "hang", "BundleError"}
    want = {n: [i for i in range(60) if random.Random(f"4:{i}").randrange(6) == n] for n in range(6)}
    assert summary.hangs == want[2] and summary.code_run == want[3]
    assert counts["BundleError"] == len(want[4]) and counts["traceback"] == len(want[1]) + len(want[5])
    where = {k.split(" at ")[0]: v for k, v in summary.tracebacks.items()}
    assert where["TypeError"]["index"] == want[1][0] and where["TypeError"]["count"] == len(want[1])
    assert where["ValueError"]["message"].startswith("multi-line BundleError")


def test_hang_timer_is_per_input():
    def endless():
        while True:
            pass

    assert fz.run_one(endless, timeout=0.2)[0] == "hang"
    assert fz.run_one(lambda: None, timeout=0.2) == ("loaded", None)


def test_mutants_reproduce_from_the_seed():
    base = {"model": {"z_dim": 32, "blocks": [8, 16]}, "graphs": {"mapping": {"file": "m.onnx"}}}
    first = [fz.mutate_json(base, random.Random(f"9:{i}")) for i in range(50)]
    again = [fz.mutate_json(base, random.Random(f"9:{i}")) for i in range(50)]
    assert json.dumps(first) == json.dumps(again)
    assert sum(m != base for m in first) >= 45  # nearly every mutant differs from the original
    assert base == {"model": {"z_dim": 32, "blocks": [8, 16]}, "graphs": {"mapping": {"file": "m.onnx"}}}
