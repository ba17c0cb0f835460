"""SIGINT and SIGTERM at random moments (seeded) in every command that writes: no temporary,
empty or corrupt output stays, the exit code is 130 / 143 (or 0: it finished first), stderr
is the one line `interrupted`; an interrupted first run leaves no cache entry a later run
trusts, and the next run rebuilds it. More runs: benchmarks/signals.py."""

from __future__ import annotations

import signal

import pytest

from creps.runtime.bundle import sha256_file
from signal_loop import cases, make_models, run_once, signal_loop

pytestmark = pytest.mark.slow

RUNS = {"creps-run folder": 8, "creps-run file": 8, "creps-run first run": 2, "creps-export": 3,
        "creps-generate": 3, "creps-calib": 2, "creps-train": 3}  # 29 signalled runs, and 2 in the rebuild test


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def all_cases(models):
    return cases(models)


def report(outcomes) -> str:
    return "\n".join(f"{o.case}: signal {o.signum} after {o.delay:.2f} s -> exit {o.code}, {o.problems}"
                     for o in outcomes if o.problems)


@pytest.mark.parametrize("name", list(RUNS))
def test_signals_leave_nothing_half_done(all_cases, tmp_path, name):
    outcomes = signal_loop(all_cases[name], tmp_path, RUNS[name], seed=sorted(RUNS).index(name))
    assert not any(o.problems for o in outcomes), report(outcomes)
    assert any(o.interrupted for o in outcomes), "no run was interrupted: the delays are too long for this machine"


def test_the_run_after_an_interrupted_first_run_rebuilds_the_default_bundle(models, all_cases, tmp_path):
    case = all_cases["creps-run first run"]
    for delay in (0.5, 0.0):  # into the export, then before it starts
        stopped = run_once(case, tmp_path / "run", signal.SIGTERM, delay)
        assert stopped.interrupted and not stopped.problems, report([stopped])
        assert not list(case.cache(tmp_path / "run").rglob("manifest.json"))  # nothing a later run would trust
    hash = sha256_file(models["checkpoint"])[:16]
    killed = case.cache(tmp_path / "run") / "creps" / "bundles" / f".default-{hash}.x.partial"
    killed.mkdir(parents=True)  # what an export killed outright (SIGKILL) leaves
    (killed / "mapping.onnx").write_bytes(b"half a graph")
    again = run_once(case, tmp_path / "run")
    assert again.code == 0 and not again.problems, report([again])
    assert len(list(case.cache(tmp_path / "run").rglob("manifest.json"))) == 1
