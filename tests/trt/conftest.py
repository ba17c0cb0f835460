"""A tiny bundle (no engines) shared by the TensorRT tests."""

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import random_generator  # noqa: E402


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    from creps.export import export_bundle

    return export_bundle(random_generator(), tmp_path_factory.mktemp("trt") / "bundle", verify=False)


@pytest.fixture
def engine_bundle(bundle, tmp_path):
    """A copy of the tiny bundle that a test may add engines to."""
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    return copy


@pytest.fixture
def fake_gpu(request, monkeypatch):
    """TensorRT and cuda-python replaced by the simulator of fakes.py; returns its FakeGpu.

    TensorRT 10.3 unless a test parametrizes fake_gpu (indirect=True) with a version."""
    from fakes import FakeGpu

    from creps.export import trt as trt_export
    from creps.runtime import trt as trt_runtime

    gpu = FakeGpu(getattr(request, "param", "10.3.0.30"))
    monkeypatch.setitem(sys.modules, "tensorrt", gpu.tensorrt)
    monkeypatch.setattr(trt_runtime, "load_cudart", lambda: gpu.cudart)
    monkeypatch.setattr(trt_export, "load_cudart", lambda: gpu.cudart)
    return gpu
