"""creps-calib end to end on a tiny bundle, and its one-line refusals."""

import json
import shutil
import subprocess
import sys

import pytest

from creps.checkpoint import save_checkpoint
from creps.runtime.bundle import read_bundle


def calib(*args):
    return subprocess.run([sys.executable, "-c", "from creps.calib.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=600)


def test_fp16_and_int8_graphs_land_in_the_manifest(tiny_G, tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(ckpt, tiny_G, tiny_G.cfg)
    report = tmp_path / "report.json"
    done = calib("--bundle", str(bundle), "--int8", "--network", str(ckpt), "--seeds", "0,1",
                 "--sizes", "24x24,37x13", "--report", str(report))
    assert done.returncode == 0, done.stderr
    assert "fp16: predicted error vs fp32" in done.stdout and "int8: measured error vs fp32" in done.stdout
    graphs = read_bundle(bundle).graphs  # verifies every sha256
    assert {"lines.fp16", "pixels.fp16", "lines.int8", "pixels.int8"} <= set(graphs)
    assert graphs["pixels.fp16"]["precision"] == "fp16" and graphs["lines.int8"]["modulation"] == "activation"
    assert graphs["lines.fp16"]["predicted_error"]["max_abs"] < 1e-2
    assert graphs["lines.fp16"]["fp32_islands"]  # at least the Fourier phases
    data = json.loads(report.read_text())
    assert data["error_jobs"][1] == {"seed": 1, "psi": 0.7, "size": "37x13"}


@pytest.mark.parametrize("args, message", [
    (["--bundle", "/no/such/bundle"], "no such bundle folder"),
    (["--bundle", ".", "--no-fp16"], "nothing to do"),
    (["--bundle", ".", "--sizes", "12xq"], "size"),
    (["--bundle", ".", "--trunc", "a,b"], "comma-separated"),
])
def test_bad_input_is_one_line(args, message):
    done = calib(*args)
    assert done.returncode == 1 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_int8_on_folded_graphs_without_checkpoint_says_what_to_pass(tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    done = calib("--bundle", str(bundle), "--no-fp16", "--int8")
    assert done.returncode == 1 and "--network" in done.stderr
