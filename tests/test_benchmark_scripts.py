"""The scripts under benchmarks/: `--help` answers at once, states the run time and writes
nothing (issue 10: foundation.py --help ran the benchmark and rewrote its record), and
gemm_ceiling.py skips PyTorch's bfloat16 products on a CPU without bfloat16 instructions
(emulated, they ran for over 15 minutes on an AVX2-only CPU) and says so."""

from __future__ import annotations

import importlib.util
import json
import re
import runpy
import signal
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
RESULTS = BENCHMARKS / "results"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name != "common.py")  # common.py is their module
HELP_SECONDS = 60  # imports only (slow on a loaded machine); a benchmark that ignores --help runs for minutes


def records() -> dict:
    return {p.name: p.stat().st_mtime_ns for p in RESULTS.iterdir()}


def too_slow(signum, frame):
    raise TimeoutError(f"--help still running after {HELP_SECONDS} s: it runs the benchmark")


@pytest.fixture
def as_script(monkeypatch):
    """Python's view when it runs `python benchmarks/NAME.py`: the script's folder first on sys.path."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setattr(sys, "path", list(sys.path))  # undo the scripts' own insertions afterwards


def test_every_benchmark_is_found():
    assert {"foundation.py", "export.py", "precision.py", "gemm_ceiling.py", "train_speed.py",
            "runtime_tiles.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_states_the_run_time_and_writes_nothing(script, as_script, monkeypatch, capsys, tmp_path):
    """Runs the script's __main__ block in this process, as `python benchmarks/SCRIPT --help`
    from another folder (a fresh interpreter per script would import PyTorch each time)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    before = records()
    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(HELP_SECONDS)
    try:
        with pytest.raises(SystemExit) as exited:
            runpy.run_path(str(BENCHMARKS / script), run_name="__main__")
            raise SystemExit(0)  # click's non-standalone --help returns instead of exiting
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert exited.value.code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith("Usage:") and "--help" in out
    assert re.search(r"[Tt]akes about \d+(\.\d+)? min", out), out  # the stated run time
    assert "--record" in out
    assert records() == before and not any(tmp_path.iterdir())


def load_gemm_ceiling(monkeypatch, bf16: bool):
    """benchmarks/gemm_ceiling.py as a module, at one small shape, on a CPU with or without bf16."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("gemm_ceiling", BENCHMARKS / "gemm_ceiling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "SHAPES", ((64, 32),))
    monkeypatch.setattr(module, "has_bf16", lambda: bf16)
    return module


@pytest.mark.parametrize("bf16", [False, True])
def test_gemm_ceiling_times_bf16_only_with_bf16_instructions(bf16, monkeypatch, capsys, tmp_path):
    module = load_gemm_ceiling(monkeypatch, bf16)
    before = records()
    module.main.main(["--out", str(tmp_path)], standalone_mode=False)
    assert records() == before
    report = json.loads((tmp_path / "gemm_ceiling.json").read_text())
    (row,) = report["rows"]
    assert row["shape"] == "64x32 @ 32x32" and row["ort_fp32_1t"] > 0 and row["torch_fp32_2t"] > 0
    out = capsys.readouterr().out
    if bf16:
        assert row["torch_bf16_2t"] > 0 and report["torch_bf16_best_gflops"] == row["torch_bf16_2t"]
        assert "torch_bf16_skipped" not in report and "not timed" not in out
    else:
        assert "torch_bf16_2t" not in row and report["torch_bf16_best_gflops"] is None
        assert report["torch_bf16_skipped"] == module.NO_BF16 and "avx512_bf16" in module.NO_BF16
        assert module.NO_BF16 in out and "bfloat16 skipped" in out
    machine = report["machine"]
    assert machine["cpu"] and machine["cpus"] >= 1 and machine["torch_threads"] >= 1
    assert f"saved {tmp_path / 'gemm_ceiling.json'}" in out
