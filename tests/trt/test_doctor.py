"""creps-doctor on the simulated GPU (tests/trt/fakes.py) and without TensorRT: the table it
prints, the bars it applies, its exit status, and the one line it says when something is missing."""

from __future__ import annotations

import re
import shutil
import sys

import numpy as np
import pytest
from in_process import in_process

from creps.errors import CrepsError
from creps import doctor
from creps.runtime import trt as trt_runtime

GRAPHS = {"fp32": ["mapping", "lines", "pixels", "image"], "fp16": ["mapping", "lines.fp16", "pixels.fp16", "image"]}


@pytest.fixture
def gpu(fake_gpu, monkeypatch):
    """The simulator, with CUDA's version calls as cuda-python returns them if it does not model them."""
    cudart = trt_runtime.load_cudart()
    for call, version in (("cudaRuntimeGetVersion", 12060), ("cudaDriverGetVersion", 12080)):
        if not hasattr(cudart, call):
            monkeypatch.setattr(cudart, call, lambda v=version: (cudart.cudaError_t.cudaSuccess, v), raising=False)
    return fake_gpu


def doctor_run(monkeypatch, capsys, default):
    """creps-doctor with `default()` standing in for the default model's bundle (its export takes minutes)."""
    pytest.importorskip("onnx", reason="creps-doctor makes FP16 graphs: the calib extra (onnx)")
    monkeypatch.setattr(doctor, "default_bundle", default)
    return in_process(monkeypatch, capsys, doctor.cli, "creps-doctor")


def rows(out: str) -> dict[tuple[str, str, str], list[str]]:
    """(bundle, precision, graph) -> the rest of the row's cells, split on whitespace."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("bundle"))
    return {tuple(line.split()[:3]): line.split()[3:] for line in lines[start + 1:-1]}


@pytest.mark.parametrize("fake_gpu", ["10.3.0.30", "11.1.0"], indirect=True)  # JetPack 6's and the latest
def test_on_the_simulated_gpu_every_engine_meets_its_bar(fake_gpu, gpu, monkeypatch, capsys, tmp_path):
    default = tmp_path / "default"  # a second bundle: a copy of the tiny one
    shutil.copytree(doctor.tiny_bundle(), default)
    code, out, err = doctor_run(monkeypatch, capsys, lambda: default)
    assert code == 0, err
    assert re.fullmatch(rf"creps-doctor: TensorRT {re.escape(gpu.tensorrt.__version__)}, CUDA runtime \d+\.\d+, "
                        r"driver (\d+(\.\d+)+ )?\(CUDA \d+\.\d+\), GPU Fake GPU, compute capability 8\.7",
                        out.splitlines()[0]), out.splitlines()[0]
    assert "tiny 64x64, 96x40, 33x17" in out  # the training resolution 32: square, wide, odd
    table = rows(out)
    assert set(table) == {(b, p, g) for b in ("tiny", "default") for p, graphs in GRAPHS.items() for g in graphs}
    for (bundle, precision, graph), cells in table.items():
        max_abs, psnr, result = float(cells[0]), cells[1], cells[-1]
        if precision == "fp32" or graph == "mapping":  # the same graph on ONNX Runtime: rounding at most
            assert max_abs < 1e-5 and result == "pass", (bundle, precision, graph, cells)
        elif graph == "lines.fp16":  # no bar of its own
            assert result == "-" and psnr == "-"
        else:  # FP16 images: really rounded, within the fp16 bar
            assert 1e-5 < max_abs <= 1e-2 and float(psnr) >= 45 and result == "pass", (bundle, graph, cells)
    assert out.splitlines()[-1] == "14 of 14 checks pass"
    assert gpu.live()["device"] == gpu.live()["pinned"] == 0  # every backend closed


def test_an_engine_off_by_a_little_fails_and_the_default_model_is_skipped_without_torch(gpu, monkeypatch, capsys):
    run_stream = trt_runtime.TensorRTBackend.run_stream

    def off(self, stage, calls):  # an engine 2e-4 off: past the FP32 bar (1e-4), within the FP16 one
        for outputs in run_stream(self, stage, calls):
            yield {name: value + np.float32(2e-4) for name, value in outputs.items()}

    monkeypatch.setattr(trt_runtime.TensorRTBackend, "run_stream", off)
    monkeypatch.setattr(trt_runtime.TensorRTBackend, "run", lambda self, stage, feeds: next(off(self, stage, [feeds])))

    def no_torch():
        raise CrepsError("no --bundle given: the default model is exported once into X, which needs torch")

    monkeypatch.setattr(doctor, "missing", lambda extra: ["torch"])
    code, out, err = doctor_run(monkeypatch, capsys, no_torch)
    assert code == 1 and err.strip().splitlines()[-1] == "error: creps-doctor: 5 check(s) miss their bar (the FAIL " \
                                                         "rows above)"
    table = rows(out)
    assert [table[("tiny", "fp32", g)][-1] for g in GRAPHS["fp32"]] == ["FAIL"] * 4
    assert table[("tiny", "fp16", "mapping")][-1] == "FAIL"  # the mapping stays FP32
    assert table[("tiny", "fp16", "image")][-1] == "pass"
    assert table[("default", "-", "-")][5] == "skip" and out.splitlines()[-2].endswith("which needs torch")
    assert "2 of 7 checks pass; not checked: default" in out


@pytest.mark.parametrize("precision, graph, image", [("fp32", "pixels", True), ("fp16", "lines.fp16", False)])
def test_nan_or_inf_from_an_engine_fails_whatever_the_bar(precision, graph, image):
    pytest.importorskip("onnx", reason="PSNR is creps.calib's (the calib extra)")
    reference = np.random.default_rng(0).uniform(-1, 1, (1, 3, 4, 5)).astype(np.float32)
    reference[0, 1, 2, 3] = 0.0
    test = reference.copy()
    test[0, 1, 2, 3] = np.nan  # compare counts it as 0: no error in max abs or PSNR
    row = doctor.measure("tiny", precision, graph, precision, image, doctor.Judge(1e-4), [({"x": reference},
                                                                                           {"x": test})], [1e-3])
    assert row.result == "FAIL"
    assert doctor.measure("tiny", precision, graph, precision, image, doctor.Judge(1e-4),
                          [({"x": reference}, {"x": reference})], [1e-3]).result == ("pass" if image else "-")


def test_cuda_versions_as_cuda_numbers_them():  # 1000 * major + 10 * minor (cudaRuntimeGetVersion)
    assert [doctor.cuda_version(n) for n in (12060, 11080, 13000, 12010)] == ["12.6", "11.8", "13.0", "12.1"]


def test_without_tensorrt_one_line(monkeypatch, capsys):
    for module in ("tensorrt", "cuda", "cuda.bindings"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails
    code, out, err = in_process(monkeypatch, capsys, doctor.cli, "creps-doctor")
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "TensorRT is not installed here" in err and "cuda-python is not installed here" in err


def test_without_a_gpu_one_line(fake_gpu, monkeypatch, capsys):
    fake_gpu.present = False  # TensorRT and cuda-python installed, no device: cudaErrorNoDevice
    code, out, err = in_process(monkeypatch, capsys, doctor.cli, "creps-doctor")
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("error: creps-doctor needs TensorRT, cuda-python and an NVIDIA GPU: no usable CUDA device")
    assert "TensorRT is not installed" not in err
