"""Engines end to end (TensorRT and a GPU), and the one-line refusals where they are missing."""

import importlib.util

import numpy as np
import pytest

from creps.errors import CrepsError

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def cuda_devices() -> int:
    try:
        from creps.runtime.trt import cuda_call, load_cudart

        cudart = load_cudart()
        return cuda_call(cudart, cudart.cudaGetDeviceCount())
    except CrepsError:
        return 0


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed (this checks the refusal without it)")
def test_without_tensorrt_one_clear_error(bundle):
    from creps.export.trt import EngineBuildError, build_engines
    from creps.export.trt_plan import build_plan
    from creps.runtime.backends import BackendUnavailable
    from creps.runtime.bundle import read_bundle
    from creps.runtime.trt import TensorRTBackend

    plan = build_plan(read_bundle(bundle).manifest)
    with pytest.raises(EngineBuildError, match="TensorRT is not installed here.*ONNX bundle is complete"):
        build_engines(bundle, plan)
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed"):
        TensorRTBackend(read_bundle(bundle))


@pytest.mark.skipif(not HAS_TRT, reason="TensorRT is not installed")
@pytest.mark.skipif(HAS_TRT and cuda_devices() == 0, reason="no CUDA device")
@pytest.mark.parametrize("size", [(48, 32), (17, 29)])
def test_engines_match_onnx_runtime(bundle, size, tmp_path):
    from creps.export.trt import build_engines
    from creps.export.trt_plan import build_plan
    from creps.runtime.bundle import read_bundle
    from creps.runtime.generate import Runtime

    plan = build_plan(read_bundle(bundle).manifest, "fp32", [size], tile=(16, 8))
    cache = tmp_path / "timing.cache"
    entries = build_engines(bundle, plan, timing_cache=cache)
    assert set(entries) == {"mapping", "lines", "pixels"} and cache.is_file()
    reference = Runtime(bundle, backend="ort-cpu").generate(seeds=[3], size=size, psi=0.7, out="float")
    engine = Runtime(bundle, backend="tensorrt", tile=(16, 8)).generate(seeds=[3], size=size, psi=0.7,
                                                                          out="float")
    assert np.max(np.abs(np.asarray(engine) - np.asarray(reference))) < 2e-3  # TF32 matmuls allowed
