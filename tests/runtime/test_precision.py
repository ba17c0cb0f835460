"""--precision and Runtime(precision=...): which graphs run, what auto picks, what is refused.

The selection tests give a copy of the shipped tiny bundle fp16 / int8 entries of their own
(no creps-calib, so they run without onnx): either byte copies of the fp32 graphs, or
files ONNX Runtime cannot load, which show exactly which graph a backend opened. The last
test runs real creps-calib INT8 graphs where onnx and PyTorch are installed.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from creps.errors import BundleError
from creps.runtime import Runtime, cpu
from creps.runtime import precision as precision_rules
from creps.runtime.backends import BackendUnavailable
from creps.runtime.bundle import file_entry, read_bundle, write_manifest
from creps.runtime.cli import cli
from in_process import in_process

BARS = {"fp16": {"psnr_db": 45.0, "max_abs": 1e-2}, "int8": {"psnr_db": 45.0, "max_abs": 0.1}}
WITHIN = {"psnr_db": 50.0, "max_abs": 0.05}


def with_precisions(tiny_bundle, tmp_path, graphs: dict, bars=BARS, **fields):
    """A copy of the tiny bundle with `graphs`: {precision: (error recorded, "copy" | "broken")}, their
    entries with `fields` besides."""
    folder = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, folder)
    manifest = read_bundle(folder).manifest
    for precision, (error, kind) in graphs.items():
        for stage in ("lines", "pixels"):
            file = f"{stage}.{precision}.onnx"
            if kind == "copy":
                shutil.copyfile(folder / f"{stage}.onnx", folder / file)
            else:
                (folder / file).write_bytes(b"not an onnx graph")
            entry = {k: v for k, v in manifest["graphs"][stage].items() if k in ("stage", "opset", "inputs", "outputs")}
            error_field = "measured_error" if precision == "int8" else "predicted_error"
            manifest["graphs"][f"{stage}.{precision}"] = file_entry(folder, file, precision, **entry, **fields,
                                                                     **({error_field: error} if error else {}))
    manifest["verification"] = {**manifest.get("verification", {}), "precision": {"bars": bars}}
    write_manifest(folder, manifest)
    return folder


def test_fp32_is_the_default_and_a_named_precision_runs_its_graphs(tiny_bundle, tmp_path):
    bundle = with_precisions(tiny_bundle, tmp_path, {"int8": (WITHIN, "copy"), "fp16": (WITHIN, "broken")})
    with Runtime(bundle, backend="ort-cpu") as runtime:
        assert runtime.precision == "fp32"
        want = runtime.generate([3, 4], (21, 9), 0.7)
    with Runtime(bundle, backend="ort-cpu", precision="int8") as runtime:
        assert runtime.precision == "int8"
        np.testing.assert_array_equal(runtime.generate([3, 4], (21, 9), 0.7), want)  # byte copies of fp32
    with pytest.raises(BundleError, match=r"lines\.fp16\.onnx: ONNX Runtime cannot load it"):
        Runtime(bundle, backend="ort-cpu", precision="fp16")  # the fp16 files, and no others, were opened


def timed(speedup=1.5, **where) -> dict:
    """The graph entry field creps-calib writes where it timed the stage: on this CPU, or `where`."""
    here = {"cpu": cpu.cpu()[0], "int8_flags": sorted(cpu.cpu()[1] & cpu.INT8_KERNEL_FLAGS)}
    return {"cpu_speedup": {"speedup": speedup, **here, "cores": 2, **where}}


def test_auto_keeps_fp32_on_the_cpu_where_int8_is_not_faster(tiny_bundle, tmp_path):
    bundle = with_precisions(tiny_bundle, tmp_path, {"int8": (WITHIN, "broken")})
    with Runtime(bundle, backend="ort-cpu", precision="auto") as runtime:  # no timing recorded: never opens int8
        assert runtime.precision == "fp32"


@pytest.mark.parametrize("record, runs", [
    (timed(), "int8"), (timed(1.01), "int8"), (timed(1.0), "fp32"), (timed(0.8), "fp32"),
    (timed(cpu="Another CPU"), "fp32"), (timed(int8_flags=["avx2"]), "fp32"), (timed(int8_flags=None), "fp32"),
    (timed(speedup="1.5"), "fp32"), (timed(speedup=True), "fp32"), ({"cpu_speedup": 1.5}, "fp32"),
    ({"cpu_speedup": {}}, "fp32"), ({"cpu_speedup": None}, "fp32")])
def test_auto_takes_int8_on_the_cpu_only_where_it_was_timed_faster_on_a_cpu_like_this(tiny_bundle, tmp_path,
                                                                                        record, runs):
    bundle = with_precisions(tiny_bundle, tmp_path, {"int8": (WITHIN, "copy")}, **record)
    with Runtime(bundle, backend="ort-cpu", precision="auto") as runtime:
        assert runtime.precision == runs


def test_a_stage_kept_in_float_needs_no_timing(tiny_bundle, tmp_path):
    """creps-calib gives a stage with no INT8 layer its fp32 graph and no cpu_speedup; the other stage decides."""
    bundle = with_precisions(tiny_bundle, tmp_path, {"int8": (WITHIN, "copy")}, **timed())
    manifest = read_bundle(bundle).manifest
    for stage, runs in (("lines", "int8"), ("pixels", "fp32")):  # then neither stage has one
        manifest["graphs"][f"{stage}.int8"]["cpu_speedup"] = None
        write_manifest(bundle, manifest)
        with Runtime(bundle, backend="ort-cpu", precision="auto") as runtime:
            assert runtime.precision == runs, stage


def test_auto_skips_8_bit_weights_where_the_kernels_saturate(tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.setattr(precision_rules, "saturates_8bit_weights", lambda: True)
    bundle = with_precisions(tiny_bundle, tmp_path, {"int8": (WITHIN, "broken")}, weight_bits=8, **timed())
    with Runtime(bundle, backend="ort-cpu", precision="auto") as runtime:  # never opens the int8 files
        assert runtime.precision == "fp32"


def test_auto_takes_int8_on_the_cpu_only_within_its_bar(tiny_bundle, tmp_path):
    within = with_precisions(tiny_bundle, tmp_path / "a", {"int8": (WITHIN, "broken")}, **timed())
    with pytest.raises(BundleError, match=r"lines\.int8\.onnx: ONNX Runtime cannot load it"):
        Runtime(within, backend="ort-cpu", precision="auto")
    for error in ({"psnr_db": 44.9, "max_abs": 0.05}, {"psnr_db": 60.0, "max_abs": 0.2}, {"psnr_db": None,
                                                                                          "max_abs": 0.11}, None):
        missing = with_precisions(tiny_bundle, tmp_path / str(error), {"int8": (error, "broken")}, **timed())
        with Runtime(missing, backend="ort-cpu", precision="auto") as runtime:  # never opens the int8 files
            assert runtime.precision == "fp32"
    identical = with_precisions(tiny_bundle, tmp_path / "same", {"int8": ({"psnr_db": None, "max_abs": 0.0}, "copy")},
                                **timed())
    with Runtime(identical, backend="ort-cpu", precision="auto") as runtime:
        assert runtime.precision == "int8"
    no_bar = with_precisions(tiny_bundle, tmp_path / "nobar", {"int8": (WITHIN, "broken")}, bars={}, **timed())
    with Runtime(no_bar, backend="ort-cpu", precision="auto") as runtime:
        assert runtime.precision == "fp32"


def test_auto_reads_the_figures_the_recorded_bar_names(tiny_bundle, tmp_path):
    """creps-calib records the int8 bar on the uint8 PSNR; a figure the bar does not know never qualifies."""
    uint8_bar = {"int8": {"uint8_psnr_db": 45.0, "max_abs": 0.25}}
    for error, runs in (({"uint8_psnr_db": 45.0, "max_abs": 0.25, "psnr_db": 10.0}, "int8"),
                        ({"uint8_psnr_db": 44.99, "max_abs": 0.1, "psnr_db": 90.0}, "fp32"),
                        ({"uint8_psnr_db": None, "max_abs": 0.0}, "int8"), ({"max_abs": 0.0}, "fp32")):
        bundle = with_precisions(tiny_bundle, tmp_path / str(len(list(tmp_path.iterdir()))),
                                 {"int8": (error, "copy")}, bars=uint8_bar, **timed())
        with Runtime(bundle, backend="ort-cpu", precision="auto") as runtime:
            assert runtime.precision == runs, error
    unknown = with_precisions(tiny_bundle, tmp_path / "unknown", {"int8": (WITHIN, "broken")},
                              bars={"int8": {"ssim": 0.9}}, **timed())
    with Runtime(unknown, backend="ort-cpu", precision="auto") as runtime:
        assert runtime.precision == "fp32"


def test_auto_never_takes_fp16_on_the_cpu(tiny_bundle, tmp_path):
    bundle = with_precisions(tiny_bundle, tmp_path, {"fp16": (WITHIN, "broken")}, **timed())
    with Runtime(bundle, backend="ort-cpu", precision="auto") as runtime:
        assert runtime.precision == "fp32"


@pytest.mark.parametrize("saturates", [True, False])
def test_eight_bit_int8_weights_run_only_where_onnx_runtime_is_exact(tiny_bundle, tmp_path, monkeypatch, saturates):
    """On an x86 CPU without VNNI (saturates) the CPU backend refuses 8-bit weights in one line naming
    the 7-bit calibration; 7-bit weights, and bundles from before the width was recorded (7), run anywhere."""
    monkeypatch.setattr(precision_rules, "saturates_8bit_weights", lambda: saturates)
    eight = with_precisions(tiny_bundle, tmp_path / "8", {"int8": (WITHIN, "copy")}, weight_bits=8)
    if saturates:
        with pytest.raises(BundleError, match=r"its int8 graphs have 8-bit weights, which ONNX Runtime's integer "
                                              r"kernels saturate on this CPU \(x86 without VNNI\); make 7-bit ones "
                                              rf"with: creps-calib --bundle {eight} --int8 --weight-bits 7$"):
            Runtime(eight, backend="ort-cpu", precision="int8")
    else:
        with Runtime(eight, backend="ort-cpu", precision="int8") as runtime:
            assert runtime.precision == "int8"
    for folder in (with_precisions(tiny_bundle, tmp_path / "7", {"int8": (WITHIN, "copy")}, weight_bits=7),
                   with_precisions(tiny_bundle, tmp_path / "old", {"int8": (WITHIN, "copy")})):
        with Runtime(folder, backend="ort-cpu", precision="int8") as runtime:
            assert runtime.precision == "int8"


@pytest.mark.parametrize("bits", [9, "8", True, None])
def test_a_weight_width_other_than_7_or_8_is_refused(tiny_bundle, tmp_path, bits):
    bundle = with_precisions(tiny_bundle, tmp_path, {"int8": (WITHIN, "copy")}, weight_bits=bits)
    with pytest.raises(BundleError, match=rf"int8 weight_bits {bits!r} in the manifest, not 7 or 8; re-run: "
                                          rf"creps-calib --bundle {bundle} --int8$"):
        Runtime(bundle, backend="ort-cpu", precision="int8")


def test_a_precision_the_bundle_lacks_names_the_command_that_makes_it(tiny_bundle, tmp_path):
    with pytest.raises(BundleError, match=rf"has no int8 graphs \(it has: fp32\); make them with: "
                                          rf"creps-calib --bundle {tiny_bundle} --int8$"):
        Runtime(tiny_bundle, backend="ort-cpu", precision="int8")
    with pytest.raises(BundleError, match=rf"has no fp16 graphs \(it has: fp32\); make them with: "
                                          rf"creps-calib --bundle {tiny_bundle}$"):
        Runtime(tiny_bundle, backend="ort-cpu", precision="fp16")
    with pytest.raises(BundleError, match="unknown precision 'int4'"):
        Runtime(tiny_bundle, backend="ort-cpu", precision="int4")


def test_creps_run_precision_flag(tiny_bundle, tmp_path, monkeypatch, capsys):
    def run(*args):
        return in_process(monkeypatch, capsys, cli, "creps-run", "--bundle", tiny_bundle, *args)

    code, _, err = run("--backend", "ort-cpu", "--precision", "int8", "--out", tmp_path / "x.png")
    assert code == 1 and "make them with: creps-calib --bundle" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.png").exists()
    code, _, err = run("--precision", "int4", "--out", tmp_path / "x.png")
    assert code == 1 and "'int4' is not one of 'fp32', 'fp16', 'int8', 'auto'" in err
    bundle = with_precisions(tiny_bundle, tmp_path, {"int8": (WITHIN, "copy")})
    code, _, err = in_process(monkeypatch, capsys, cli, "creps-run", "--bundle", bundle, "--backend", "ort-cpu",
                              "--precision", "auto", "--size", "17x5", "--out", tmp_path / "y.png")
    assert code == 0 and (tmp_path / "y.png").is_file(), err


def test_tensorrt_runs_only_its_engines_precision(tiny_bundle, tmp_path):
    """The engines' recorded precision against the one asked for, before TensorRT is touched."""
    from creps.runtime.precision import engine_mismatch, engines_precision

    folder = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["engines"] = {stage: {"file": "x", "sha256": "0" * 64, "precision": p}
                           for stage, p in (("mapping", "fp32"), ("lines", "fp16"), ("pixels", "fp16"))}

    class Manifest:  # only what the precision rules read
        path, engines = folder, manifest["engines"]

    assert engines_precision(Manifest) == "fp16"
    assert engine_mismatch(Manifest, "auto") is None and engine_mismatch(Manifest, "fp16") is None
    assert engine_mismatch(Manifest, "int8") == (f"the bundle's engines are fp16, not int8; build int8 engines with: "
                                                 f"creps-export --out {folder} --int8 --trt")
    assert engine_mismatch(Manifest, "fp32").endswith(f"creps-export --out {folder} --trt")
    Manifest.engines = {**Manifest.engines, "pixels": {**Manifest.engines["pixels"], "precision": "int8"}}
    with pytest.raises(BundleError, match=r"built in \['fp16', 'int8'\], not one precision"):
        engines_precision(Manifest)


def test_tensorrt_backend_refuses_another_precision_before_allocating(tiny_bundle, tmp_path, monkeypatch):
    """`--backend tensorrt --precision int8` on fp32 engines: one line; nothing of CUDA allocated."""
    from creps.runtime import trt as trt_runtime

    class NoCuda:
        def __getattr__(self, name):
            raise AssertionError(f"cudart.{name} called before the precision check")

    class Trt:
        __version__ = "10.3.0"

    folder = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, folder)
    manifest = read_bundle(folder).manifest
    for stage in ("mapping", "lines", "pixels"):
        (folder / f"{stage}.engine").write_bytes(b"engine")
    manifest["engines"] = {stage: file_entry(folder, f"{stage}.engine", "fp32", graph=stage, stage=stage)
                           for stage in ("mapping", "lines", "pixels")}
    write_manifest(folder, manifest)
    monkeypatch.setattr(trt_runtime, "load_tensorrt", lambda: Trt)
    monkeypatch.setattr(trt_runtime, "load_cudart", lambda: NoCuda())
    monkeypatch.setattr(trt_runtime, "current_device", lambda cudart: None)
    with pytest.raises(BackendUnavailable, match=r"tensorrt: the bundle's engines are fp32, not int8"):
        trt_runtime.TensorRTBackend(read_bundle(folder), precision="int8")


def test_real_int8_graphs_run_and_stay_close(tiny_bundle, tiny_generator, tmp_path):
    """creps-calib's INT8 graphs of the tiny model: a different image from fp32's, close to it."""
    pytest.importorskip("onnx", reason="creps-calib needs onnx")
    from creps.calib import Job, calibrate_bundle

    folder = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, folder)
    calibrate_bundle(folder, fp16_graphs=False, int8_graphs=True, G=tiny_generator,
                     jobs=(Job(0, 1.0, 24, 16),), keep_below_bar=True, target_psnr=None,  # every layer INT8,
                     range_seeds=4, int8_stages=("lines", "pixels"))  # however fast on this CPU
    with Runtime(folder, backend="ort-cpu") as runtime:
        want = runtime.generate([1, 2], (23, 11), 0.7).astype(int)
    with Runtime(folder, backend="ort-cpu", precision="int8") as runtime:
        got = runtime.generate([1, 2], (23, 11), 0.7).astype(int)
    assert not np.array_equal(got, want)
    assert np.abs(got - want).mean() < 16
