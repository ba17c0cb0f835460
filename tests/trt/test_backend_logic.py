"""The TensorRT backend's pure logic: engine compatibility, the double-buffer order, CUDA error checks."""

import pytest
from fakes import FakeGpu

from creps.runtime.backends import BackendUnavailable
from creps.runtime.trt import CudaError, Device, check_engine, check_host_code, cuda_call, pipeline_order

ENTRY = {"file": "pixels.engine", "tensorrt_version": "10.3.0.30", "gpu_name": "Orin (nvgpu)",
         "compute_capability": "8.7"}
ORIN = Device("Orin (nvgpu)", "8.7")


def test_matching_engine_is_accepted():
    check_engine(ENTRY, "b", "10.3.0.30", ORIN)


@pytest.mark.parametrize("version", ["10.3.0.26", "10.4.0.1", "11.1.0"])
def test_other_tensorrt_is_refused_with_the_rebuild_command(version):
    with pytest.raises(BackendUnavailable, match=r"TensorRT 10\.3\.0\.30.*creps-export --out b --trt"):
        check_engine(ENTRY, "b", version, ORIN)


@pytest.mark.parametrize("built, here, runs", [
    ("10.3.0.30", "10.3.0.30", True), ("10.3.0.30", "10.16.1", True),
    ("10.3.0.30", "11.1.0", True), ("10.3.0.30", "11.4.1", True),  # 10.x engines run on 11.x (TensorRT 11 docs)
    ("10.3.0.30", "10.2.0", False), ("10.3.0.30", "12.0.0", False),  # never on an earlier release, nor 10 -> 12
    ("11.1.0", "11.4.0", True), ("11.1.0", "11.0.0", False), ("11.1.0", "10.16.1", False),
])
def test_version_compatible_engine_runs_on_the_same_or_a_later_release(built, here, runs):
    entry = {**ENTRY, "tensorrt_version": built, "version_compatible": True}
    if runs:
        check_engine(entry, "b", here, ORIN)
    else:
        with pytest.raises(BackendUnavailable, match=f"built with TensorRT {built}, this machine has {here}"):
            check_engine(entry, "b", here, ORIN)


def test_host_code_needs_the_opt_in():
    check_host_code(ENTRY, "b", allowed=False)  # not version-compatible: no host code in it
    check_host_code({**ENTRY, "version_compatible": True}, "b", allowed=True)
    with pytest.raises(BackendUnavailable, match=r"pixels.engine is version-compatible.*--allow-engine-host-code.*"
                                                 r"creps-export --out b --trt"):
        check_host_code({**ENTRY, "version_compatible": True}, "b", allowed=False)


def test_other_gpu_is_refused_unless_hardware_compatible():
    a100 = Device("NVIDIA A100-SXM4-40GB", "8.0")
    with pytest.raises(BackendUnavailable, match=r"built for Orin.*this GPU is NVIDIA A100.*--trt"):
        check_engine(ENTRY, "b", "10.3.0.30", a100)
    check_engine({**ENTRY, "hardware_compatibility": "ampere_plus"}, "b", "10.3.0.30", a100)
    with pytest.raises(BackendUnavailable):
        check_engine({**ENTRY, "hardware_compatibility": "ampere_plus"}, "b", "10.3.0.30", Device("T4", "7.5"))
    check_engine({**ENTRY, "hardware_compatibility": "same_compute_capability"}, "b", "10.3.0.30",
                 Device("Jetson AGX Orin", "8.7"))


@pytest.mark.parametrize("count", [0, 1, 2, 3, 7])
def test_pipeline_order_double_buffers(count):
    order = pipeline_order(count)
    submitted, collected, in_flight = [], [], set()
    for step, i in order:
        if step == "submit":
            assert i % 2 not in {j % 2 for j in in_flight}, "a slot is reused before its call was collected"
            in_flight.add(i)
            submitted.append(i)
            assert len(in_flight) <= 2
        else:
            assert i in in_flight
            in_flight.remove(i)
            collected.append(i)
    assert submitted == collected == list(range(count))
    if count >= 2:  # the next call is enqueued before the previous one is handed out
        assert order[:3] == [("submit", 0), ("submit", 1), ("collect", 0)]


def test_cuda_call_unpacks_and_checks():
    cudart = FakeGpu(fail_at=2).cudart  # cuda-python's (error, *values) tuples and error names
    assert cuda_call(cudart, (cudart.cudaError_t.cudaSuccess,)) is None
    assert cuda_call(cudart, (cudart.cudaError_t.cudaSuccess, 1, 2)) == (1, 2)
    assert isinstance(cuda_call(cudart, cudart.cudaMalloc(16)), int)
    with pytest.raises(CudaError, match="CUDA error 2: cudaErrorMemoryAllocation"):
        cuda_call(cudart, cudart.cudaMalloc(16))
