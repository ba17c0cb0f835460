"""creps-export on a device without PyTorch (JetPack has TensorRT, not torch): engines and
plans from an existing bundle import no torch; what needs a checkpoint says so in one line."""

import importlib.util
import json
import shutil

import pytest

from creps.errors import install_hint
from creps.export.trt_plan import build_plan
from creps.runtime.bundle import read_bundle
from without_packages import assert_one_line_error, run_without

ENGINE_PATH_NEEDS_NONE_OF = ("torch", "onnx", "onnxscript")  # a JetPack device: TensorRT, numpy, click


def export_without_torch(tmp_path, *args, blocked=("torch",)):
    """(the finished process, the blocked modules it tried to import)."""
    return run_without(blocked, "creps.export.cli:main", *args, tmp_path=tmp_path)


def test_dry_run_on_a_bundle_prints_the_plan_without_torch(bundle, tmp_path):
    done, tried = export_without_torch(tmp_path, "--out", bundle, "--trt", "--dry-run", "--sizes", "40x24,17x9,33x33",
                                       "--max-memory", "3M", blocked=ENGINE_PATH_NEEDS_NONE_OF)
    assert done.returncode == 0, done.stderr
    assert tried == []
    want = build_plan(read_bundle(bundle).manifest, "fp32", [(40, 24), (17, 9), (33, 33)], max_memory=3 << 20,
                      strict=False).describe()
    assert done.stdout.splitlines() == want


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_trt_without_tensorrt_or_torch_is_the_one_tensorrt_line(bundle, tmp_path):
    before = (bundle / "manifest.json").read_text()
    done, tried = export_without_torch(tmp_path, "--out", bundle, "--trt", "--sizes", "2048x512",
                                       blocked=ENGINE_PATH_NEEDS_NONE_OF)
    assert_one_line_error(done, "TensorRT is not installed here")
    assert tried == []
    assert (bundle / "manifest.json").read_text() == before


@pytest.mark.slow  # FP16 range analysis on ONNX Runtime, ~10 s
def test_fp16_graphs_are_made_without_torch(bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    done, tried = export_without_torch(tmp_path, "--out", copy, "--fp16")
    assert done.returncode == 0, done.stderr
    assert tried == []
    graphs = read_bundle(copy).manifest["graphs"]  # hashes checked
    for stage in ("lines", "pixels"):
        assert [v["name"] for v in graphs[f"{stage}.fp16"]["inputs"]] == [v["name"] for v in graphs[stage]["inputs"]]
        assert [v["name"] for v in graphs[f"{stage}.fp16"]["outputs"]] == [v["name"] for v in graphs[stage]["outputs"]]


@pytest.mark.parametrize("args, message", [
    (["--onnx"], "--onnx needs torch"),
    (["--trt", "--dry-run"], "--dry-run without a bundle at"),
])
def test_checkpoint_work_without_torch_is_one_line(checkpoint, tmp_path, args, message):
    out = tmp_path / "new"
    done, tried = export_without_torch(tmp_path, "--network", checkpoint, "--out", out, *args)
    assert_one_line_error(done, message)
    assert install_hint("export") in done.stderr and tried
    assert not out.exists()


def test_int8_calibration_without_torch_is_one_line_and_leaves_the_bundle(bundle, checkpoint, tmp_path):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert "pixels.int8" not in manifest["graphs"]  # so the checkpoint is needed
    done, _ = export_without_torch(tmp_path, "--network", checkpoint, "--out", bundle, "--int8")
    assert_one_line_error(done, "--int8 on this bundle needs torch")
    assert json.loads((bundle / "manifest.json").read_text()) == manifest
