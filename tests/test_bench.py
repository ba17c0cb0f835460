"""creps-bench: its arithmetic against the figures docs/model.md states for the published
config; the command on ort-cpu (--quick, into the scratch folder only), unavailable GPU
backends (one line, before the export), where runs write (--record, --out), the machine a
record names, the report's files and table per backend, and the TensorRT path on stand-ins."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import click
import numpy as np
import onnxruntime as ort
import pytest

from creps import bench
from creps.bench import flops, line_macs_per_slot, pixel_macs
from creps.runtime.backends import BackendUnavailable

PUBLISHED = {"channel_base": 65536, "channel_max": 1024, "blocks": [8, 16, 32, 64, 128, 256], "num_blocks": 6,
             "biline_channels": 32, "rank": 8, "img_channels": 3}


def test_per_slot_and_per_pixel_costs():
    assert line_macs_per_slot(PUBLISHED) == pytest.approx(10.6e6, rel=0.01)  # "≈ 10.6 M per position-slot"
    assert pixel_macs(PUBLISHED) == pytest.approx(158e3, rel=0.01)  # "≈ 158 k per pixel"


@pytest.mark.parametrize("width,height,lines,pixels", [(256, 256, 43e9, 10e9), (512, 512, 87e9, 41e9),
                                                       (2048, 512, 217e9, 166e9)])
def test_image_costs(width, height, lines, pixels):
    cost = flops(PUBLISHED, width, height)  # FLOP = 2 x multiply-adds
    assert cost["lines"] / 2 == pytest.approx(lines, rel=0.02)
    assert cost["pixels"] / 2 == pytest.approx(pixels, rel=0.04)
    assert cost["total"] == cost["lines"] + cost["pixels"]


def test_small_config_by_hand():
    # channels: b4 16, b8 8 (base 64, max 16); one entangled block, biline 4, rank 2.
    model = {"channel_base": 64, "channel_max": 16, "blocks": [8], "num_blocks": 1, "biline_channels": 4, "rank": 2,
             "img_channels": 3}
    assert line_macs_per_slot(model) == 16 * 16 + 16 * 8 + 8 * 8 + 8 * 4
    decoder = 4 * 8 + 8 * 16 + 16 * 8 + 8 * 4
    assert pixel_macs(model) == 4 * 2 + decoder + 4 * 3 + (4 * 16 + 16 * 16 + 16 * 3) + (16 * 8 + 8 * 8 + 8 * 3)


# ---- the command: backends, quick run, report files ------------------------------------------

@pytest.fixture(scope="module")
def quick_bundle(tmp_path_factory):
    """The --quick model exported once for this module: (bundle, model section)."""
    return bench.export_model(bench.QUICK_CONFIG, tmp_path_factory.mktemp("bench"))


def run_bench(monkeypatch, *args) -> int:
    """creps-bench through its console-script entry point; the exit code."""
    monkeypatch.setattr(sys, "argv", ["creps-bench", *args])
    with pytest.raises(SystemExit) as exited:
        bench.main()
        raise SystemExit(0)
    return exited.value.code


def no_export(*args):
    pytest.fail("exported before checking the backend")


@pytest.mark.parametrize("backend", ["ort-cuda", "tensorrt"])
def test_unavailable_backend_is_one_line_before_export(backend, monkeypatch, capsys, tmp_path):
    if backend == "ort-cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt raises ImportError
    monkeypatch.setattr(bench, "export_model", no_export)
    assert run_bench(monkeypatch, "--backend", backend, "--quick", "--out", str(tmp_path / "out")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {backend}: "), err
    assert not (tmp_path / "out").exists()


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_cuda_provider_that_falls_back_to_the_cpu_is_refused(monkeypatch):
    """onnxruntime-gpu without a usable GPU runs CUDA sessions on the CPU, silently."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(BackendUnavailable, match="fell back to CPUExecutionProvider"):
        bench.backend_device("ort-cuda", 1)


def records() -> dict:
    """The committed records' files and modification times."""
    return {p.name: p.stat().st_mtime_ns for p in bench.CHECKOUT_RESULTS.iterdir()}


def test_quick_ort_cpu_writes_the_scratch_folder_only(quick_bundle, monkeypatch, capsys, tmp_path):
    bundle = tmp_path / "bundle"
    monkeypatch.setattr(bench, "export_model", lambda config, folder: (shutil.copytree(quick_bundle[0], bundle),
                                                                       quick_bundle[1]))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = records()
    assert run_bench(monkeypatch, "--backend", "ort-cpu", "--quick", "--no-torch") == 0
    assert records() == before  # issue 10: --quick rewrote benchmarks/results/runtime.*
    out = cwd / "creps-bench-out"
    assert [p.name for p in cwd.iterdir()] == ["creps-bench-out"]  # no ./benchmarks/results/ either
    assert sorted(p.name for p in out.iterdir()) == ["runtime.json", "runtime.png"]
    report = json.loads((out / "runtime.json").read_text())
    assert report["backend"] == "ort-cpu" and report["device"] == bench.cpu()[0]
    assert report["machine"]["cpu"] == bench.cpu()[0] and report["machine"]["usable_cpus"] >= 1
    assert set(report["machine"]["flags"]) <= set(bench.GEMM_FLAGS) and report["seconds"] > 0
    assert report["gemm_ceiling_gflops"] > 0 and "CPUExecutionProvider" in report["gemm_ceiling"]
    assert [row["size"] for row in report["rows"]] == ["64x64", "96x32"]
    for row, size in zip(report["rows"], [(64, 64), (96, 32)]):
        seconds, stages = row["runtime"]["seconds"], row["runtime"]["stages"]
        assert 0 < stages["lines"] + stages["pixels"] <= seconds
        cost = bench.flops(report["model"], *size)
        assert row["gflops"] == pytest.approx(cost["total"] / seconds / 1e9)
        assert row["pixels_gflops"] == pytest.approx(cost["pixels"] / stages["pixels"] / 1e9)
    assert [o["size"] for o in report["tiling_overhead"]] == ["64x64"]
    assert "targets" not in report  # --quick measures nothing to judge
    table = capsys.readouterr().out
    assert "backend ort-cpu on" in table and "ceiling" in table.splitlines()[2]
    assert "wrote creps-bench-out/runtime.json" in table
    check_precision_column(report, table, bundle)


def psnr_by_hand(a: np.ndarray, b: np.ndarray) -> float | None:
    """20 log10(255) - 10 log10(MSE), the sums in Python integers."""
    squares = sum(int(d) ** 2 for d in (a.astype(np.int64) - b).ravel())
    return None if squares == 0 else 20 * math.log10(255) - 10 * math.log10(squares / a.size)


def check_precision_column(report: dict, table: str, bundle: Path) -> None:
    """fp32 and int8 rows at the quick sizes; int8's error is what two runtimes' images give, by hand."""
    from creps.runtime import Runtime

    rows = {(r["size"], r["precision"]): r for r in report["precision_rows"]}
    assert sorted(rows) == [("64x64", "fp32"), ("64x64", "int8"), ("96x32", "fp32"), ("96x32", "int8")]
    assert "ONNX Runtime on x86 has no fp16 kernels" in report["precisions_skipped"]["fp16"]
    assert "fp16 not measured: ONNX Runtime on x86" in table and "precision column (ort-cpu" in table
    with Runtime(bundle, backend="ort-cpu") as fp32, Runtime(bundle, backend="ort-cpu", precision="int8") as int8:
        for size in ((64, 64), (96, 32)):
            name = f"{size[0]}x{size[1]}"
            reference, test = fp32.generate(0, size)[0], int8.generate(0, size)[0]  # (H, W, 3), seed 0 as timed
            row = rows[(name, "int8")]
            assert row["ran"] == "int8" and rows[(name, "fp32")]["ran"] == "fp32"
            assert rows[(name, "fp32")]["uint8_psnr_db"] is None and rows[(name, "fp32")]["speedup"] == 1
            assert row["uint8_psnr_db"] == pytest.approx(psnr_by_hand(reference, test), abs=0.006)
            assert row["uint8_max_abs"] == int(np.abs(test.astype(int) - reference).max()) > 0
            changed = sum(1 for y in range(size[1]) for x in range(size[0]) if (test[y, x] != reference[y, x]).any())
            assert row["pixels_changed"] == pytest.approx(changed / (size[0] * size[1]))
            assert row["seconds"] > 0 and row["speedup"] == pytest.approx(rows[(name, "fp32")]["seconds"]
                                                                          / row["seconds"])
            assert any(line.split()[:2] == ["int8", name] for line in table.splitlines() if line.strip())


@pytest.mark.parametrize("shape", [(1, 13, 3), (7, 5, 3), (16, 9, 3)])
def test_uint8_error_against_a_psnr_by_hand(shape):
    rng = np.random.default_rng(sum(shape))
    reference = rng.integers(0, 256, shape, dtype=np.uint8)
    test = np.clip(reference.astype(int) + rng.integers(-3, 4, shape), 0, 255).astype(np.uint8)
    error = bench.uint8_error(reference, test)
    assert error["uint8_psnr_db"] == pytest.approx(psnr_by_hand(reference, test), abs=0.005)
    assert error["uint8_max_abs"] == np.abs(test.astype(int) - reference).max()
    one = reference.copy()
    one[0, -1, 1] = reference[0, -1, 1] ^ 16  # one channel of one pixel, 16 levels off
    error = bench.uint8_error(reference, one)
    pixels = shape[0] * shape[1]
    assert error["uint8_psnr_db"] == pytest.approx(10 * math.log10(255**2 * pixels * 3 / 16**2), abs=0.005)
    assert error["uint8_max_abs"] == 16 and error["pixels_changed"] == pytest.approx(1 / pixels)
    assert bench.uint8_error(reference, reference.copy()) == {"uint8_psnr_db": None, "uint8_max_abs": 0,
                                                              "pixels_changed": 0.0}


def test_precisions_per_backend():
    assert bench.precisions_of("ort-cpu", "all") == (["fp32", "int8"], {"fp16": bench.NOT_ON[("ort-cpu", "fp16")]})
    assert bench.precisions_of("ort-cpu", "int8") == (["fp32", "int8"], {})  # fp32: the reference, always
    assert bench.precisions_of("ort-cuda", "all") == (["fp32", "fp16", "int8"], {})
    assert bench.precisions_of("tensorrt", "fp16,fp32") == (["fp32", "fp16"], {})
    assert bench.precisions_of("ort-cpu", "fp32") == (["fp32"], {})
    with pytest.raises(click.BadParameter, match="bf16"):
        bench.precisions_of("ort-cpu", "int8,bf16")


def test_an_unknown_precision_is_one_line_before_export(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(bench, "export_model", no_export)
    assert run_bench(monkeypatch, "--quick", "--precisions", "int4", "--out", str(tmp_path / "out")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--precisions" in err[0] and "int4" in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,message", [
    (["--quick", "--record"], "--quick measures nothing"),
    (["--record", "--out", "x"], "give --out or --record"),
    (["--out", str(bench.CHECKOUT_RESULTS)], "holds the committed records: update them with --record"),
])
def test_what_would_touch_the_record_wrongly_is_one_line_before_export(args, message, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(bench, "export_model", no_export)
    monkeypatch.chdir(tmp_path)
    before = records()
    assert run_bench(monkeypatch, "--no-torch", *args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert records() == before and not any(tmp_path.iterdir())


def test_record_outside_a_checkout_is_refused(monkeypatch, capsys, tmp_path):
    """Installed without a checkout, creps has no benchmarks/results/ beside it."""
    monkeypatch.setattr(bench, "CHECKOUT_RESULTS", tmp_path / "site-packages" / "benchmarks" / "results")
    monkeypatch.setattr(bench, "export_model", no_export)
    assert run_bench(monkeypatch, "--record", "--no-torch") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not one: write elsewhere with --out" in err[0], err
    assert not (tmp_path / "site-packages").exists()


def test_output_folder(tmp_path):
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    assert bench.output_folder(None, False, results) == Path("creps-bench-out")
    assert bench.output_folder(tmp_path / "mine", False, results) == tmp_path / "mine"
    assert bench.output_folder(None, True, results) == results
    assert bench.CHECKOUT_RESULTS.is_dir()  # this checkout's, where --record writes


@pytest.mark.parametrize("text,model,flags,bf16", [
    ("processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse avx fma avx2\n\nprocessor\t: 1\n"
     "model name\t: other\nflags\t\t: avx512_bf16\n", "AMD EPYC 7B12", ["avx2", "fma"], False),
    ("model name\t: Intel Xeon\nflags\t: avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile\n",
     "Intel Xeon", ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16"], True),
    ("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n", None, ["asimd", "bf16"], True),  # Arm: no model name
])
def test_machine_from_cpuinfo(text, model, flags, bf16, tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    found, found_flags = bench.cpu(str(cpuinfo))
    assert model is None or found == model
    monkeypatch.setattr(bench, "cpu", lambda: (found, found_flags))
    described = bench.machine()
    assert described["flags"] == flags and described["bf16_instructions"] is bf16 and bench.has_bf16() is bf16


def device_report(report: dict, backend: str) -> dict:
    """A CPU report as a GPU run without a ceiling would leave it (for the table and files)."""
    return {**report, "backend": backend, "device": "Some GPU", "gemm_ceiling_gflops": None,
            "gemm_ceiling": bench.NO_CEILING, "tiling_overhead": [], "tiling_overhead_skipped": bench.NO_ONE_TILE}


def test_device_report_has_no_cpu_ceiling_and_its_own_files(tmp_path):
    row = {"size": "64x64", "gflop": 1.0, "gflops": 100.0, "lines_gflops": 90.0, "pixels_gflops": 110.0,
           "runtime": {"seconds": 0.01, "stages": {"lines": 0.002, "pixels": 0.007}, "peak_rss": 9e7},
           "torch": {"seconds": 0.05, "peak_rss": 3e8}}
    cpu = {"config": "quick", "backend": "ort-cpu", "device": "CPU", "threads": 2, "gemm_ceiling_gflops": 200.0,
           "gemm_ceiling": "ONNX Runtime MatMul on CPUExecutionProvider, 2 threads", "rows": [row],
           "tiling_overhead": [], "rss_ratio": {"small": "64x16", "large": "256x64", "ratio": 1.2}}
    assert "50%" in bench.table(cpu)  # 100 of 200 GFLOP/s
    gpu = device_report(cpu, "tensorrt")
    text = bench.table(gpu)
    assert "%" not in text and "200" not in text and "no GEMM ceiling" in text
    assert "torch CPU s" in text and "tiling overhead not measured on tensorrt" in text
    bench.write_report(cpu, tmp_path)
    bench.write_report(gpu, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runtime-tensorrt.json", "runtime-tensorrt.png",
                                                          "runtime.json", "runtime.png"]
    assert json.loads((tmp_path / "runtime.json").read_text())["backend"] == "ort-cpu"


class Streamer:
    """A backend whose run_stream is its own (as TensorRT's pipelining is): it tags its outputs."""

    name, precision = "streamer", "fp32"
    closed = False

    def run(self, stage, feeds):
        return {"out": feeds["x"]}

    def run_stream(self, stage, calls):
        for feeds in calls:
            yield {"out": feeds["x"], "streamed": True}

    def close(self):
        self.closed = True


def test_stage_timer_times_the_backends_own_run_stream_and_closes_it():
    backend = Streamer()
    timer = bench.StageTimer(backend)
    outs = list(timer.run_stream("pixels", [{"x": i} for i in range(3)]))
    assert outs == [{"out": i, "streamed": True} for i in range(3)]
    assert timer.run("lines", {"x": 7}) == {"out": 7}
    assert sorted(timer.seconds()) == ["lines", "pixels"] and all(s >= 0 for s in timer.seconds().values())
    timer.close()
    assert backend.closed


def test_tensorrt_path_on_stand_ins(quick_bundle, monkeypatch, tmp_path):
    """Engines built as creps-export --trt builds them, timed through TensorRTBackend's
    run_stream (TensorRT and CUDA replaced by tests/trt/fakes.py)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent / "trt"))
    from fakes import FakeGpu

    from creps.export import trt as trt_export
    from creps.runtime import trt as trt_runtime

    gpu = FakeGpu()
    monkeypatch.setitem(sys.modules, "tensorrt", gpu.tensorrt)
    monkeypatch.setattr(trt_runtime, "load_cudart", lambda: gpu.cudart)
    monkeypatch.setattr(trt_export, "load_cudart", lambda: gpu.cudart)
    assert "TensorRT" in bench.backend_device("tensorrt", 1)
    bundle = shutil.copytree(quick_bundle[0], tmp_path / "bundle")
    bench.build_engines(bundle, [(96, 32), (64, 16)])
    assert sorted(json.loads((bundle / "manifest.json").read_text())["engines"]) == ["lines", "mapping", "pixels"]
    result = bench.run_runtime({"kind": "runtime", "bundle": str(bundle), "backend": "tensorrt", "size": [96, 32],
                                "repeats": 1})
    assert sorted(result["stages"]) == ["lines", "mapping", "pixels"] and result["seconds"] > 0
    assert not any(gpu.live().values())  # the benchmark's runtime closed its backend
