"""Every console script on a runtime-only install (`pip install -e ".[ort]"`): torch, onnx, onnxscript
and safetensors blocked. What cannot run says in one line what to install; what can, runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from creps.checkpoint import save_checkpoint
from creps.errors import install_hint
from creps.export import export_bundle
from creps.runtime.default import tiny_bundle
from tiny_models import random_generator
from without_packages import TORCH_SIDE, assert_one_line_error, run_without

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
SCRIPTS = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]  # the console scripts as pip installs them


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(checkpoint, bundle without FP16 graphs) of a tiny model."""
    folder = tmp_path_factory.mktemp("commands")
    G = random_generator()
    checkpoint = folder / "tiny.safetensors"
    save_checkpoint(checkpoint, G, G.cfg)
    return checkpoint, export_bundle(G, folder / "bundle", source=checkpoint, verify=False)


def test_every_command_is_covered_here():
    assert set(SCRIPTS) == {"creps-generate", "creps-train", "creps-export", "creps-run", "creps-calib",
                            "creps-bench", "creps-doctor", "creps-serve"}


# (script, its arguments, the extra the line must name, a module the line must name)
REFUSALS = {
    "generate": ("creps-generate", ["--seeds", "0", "--outdir", "{tmp}/out"], "torch", "torch"),
    "train": ("creps-train", ["--data", "{tmp}", "--outdir", "{tmp}/runs"], "train", "torch"),
    "calib": ("creps-calib", ["--bundle", "{bundle}"], "calib", "onnx"),
    "bench": ("creps-bench", ["--quick", "--out", "{tmp}/bench"], "bench", "torch"),
    "export --onnx": ("creps-export", ["--network", "{checkpoint}", "--out", "{tmp}/new", "--onnx"], "export",
                      "torch"),
    "export --fp16": ("creps-export", ["--out", "{bundle}", "--fp16"], "calib", "onnx"),
    "export --int8": ("creps-export", ["--network", "{checkpoint}", "--out", "{bundle}", "--int8"], "calib",
                      "onnx"),
    "export --dry-run without a bundle": ("creps-export", ["--network", "{checkpoint}", "--out", "{tmp}/new",
                                                           "--trt", "--dry-run"], "export", "torch"),
    "run, default model": ("creps-run", ["--size", "16x16", "--out", "{tmp}/x.png"], "export", "torch"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_what_needs_the_torch_side_says_what_to_install_in_one_line(made, tmp_path, monkeypatch, case):
    checkpoint, bundle = made
    script, args, extra, module = REFUSALS[case]
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no cached default bundle
    args = [a.format(tmp=tmp_path, bundle=bundle, checkpoint=checkpoint) for a in args]
    done, tried = run_without(TORCH_SIDE, SCRIPTS[script], *args, tmp_path=tmp_path)
    assert_one_line_error(done, install_hint(extra), module)
    assert tried  # it looked, and was refused
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked_imports.txt"]


def test_run_and_engine_plans_need_none_of_it(made, tmp_path):
    _, bundle = made
    done, tried = run_without(TORCH_SIDE, SCRIPTS["creps-run"], "--bundle", bundle, "--size", "24x16",
                              "--out", tmp_path / "x.png", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "x.png").stat().st_size > 0 and tried == []
    done, tried = run_without(TORCH_SIDE, SCRIPTS["creps-export"], "--out", bundle, "--trt", "--dry-run",
                              tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "TensorRT build plan" in done.stdout and tried == []


def test_doctor_says_what_it_needs_without_the_torch_side(tmp_path):
    """creps-doctor on a machine without TensorRT or PyTorch: one line naming TensorRT; it never looked for torch."""
    if importlib.util.find_spec("tensorrt"):
        pytest.skip("TensorRT is installed here: creps-doctor runs its checks (tests/trt/test_doctor.py)")
    done, tried = run_without(TORCH_SIDE, SCRIPTS["creps-doctor"], tmp_path=tmp_path)
    assert_one_line_error(done, "creps-doctor needs TensorRT, cuda-python and an NVIDIA GPU")
    assert tried == []


def test_serve_without_the_web_stack_says_what_to_install(tmp_path):
    """creps-serve on a runtime-only install: one line naming the serve extra, before it binds a port."""
    done, tried = run_without(("starlette", "uvicorn"), SCRIPTS["creps-serve"], "--bundle", tiny_bundle(),
                              "--port", "0", tmp_path=tmp_path)
    assert_one_line_error(done, install_hint("serve"), "starlette")
    assert tried  # it looked, and was refused
