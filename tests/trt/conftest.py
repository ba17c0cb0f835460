"""The tiny bundle the package ships (creps/data/tiny/, no engines), a fresh copy per test, and
the fake GPU: these tests run with numpy and ONNX Runtime (and TensorRT, where present) only."""

import shutil
import sys

import pytest

from creps.runtime.default import tiny_bundle


@pytest.fixture
def bundle(tmp_path_factory):
    """This test's own copy of the tiny bundle: it may add engines to it or edit it."""
    copy = tmp_path_factory.mktemp("trt") / "bundle"
    shutil.copytree(tiny_bundle(), copy)
    return copy


@pytest.fixture
def engine_bundle(bundle):
    """A copy of the tiny bundle that a test may add engines to."""
    return bundle


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
