"""creps-export --fp16/--int8/--trt/--dry-run on an existing bundle, without TensorRT."""

import importlib.util
import subprocess
import sys

import pytest


def export(*args):
    return subprocess.run([sys.executable, "-c", "from creps.export.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=600)


def test_dry_run_prints_the_plan_for_a_panorama_on_a_jetson_budget(bundle):
    done = export("--out", str(bundle), "--fp16", "--trt", "--sizes", "2048x512,512x512", "--max-memory", "3G",
                  "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "sizes 2048x512, 512x512, batch 1, memory budget 3072 MiB" in done.stdout
    assert "pixels: graph pixels.fp16 (fp16)" in done.stdout and "cols: min [1, " in done.stdout
    assert "mapping: graph mapping (fp32)" in done.stdout  # the mapping network stays FP32
    assert not (bundle / "pixels.fp16.onnx").exists()  # planned before creps-calib made it: a dry run writes nothing


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_trt_without_tensorrt_is_one_line_and_leaves_the_bundle(bundle):
    before = (bundle / "manifest.json").read_text()
    done = export("--out", str(bundle), "--trt")
    assert done.returncode == 1 and "TensorRT is not installed here" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert (bundle / "manifest.json").read_text() == before


@pytest.mark.parametrize("args, message", [
    ([], "nothing to export"),
    (["--trt"], "is not a bundle"),
    (["--trt", "--sizes", "20x"], "size"),
])
def test_bad_requests_are_one_line(tmp_path, args, message):
    done = export("--out", str(tmp_path / "nothing"), *args)
    assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr
