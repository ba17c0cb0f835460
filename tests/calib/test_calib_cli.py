"""creps-calib end to end on a tiny bundle, and its one-line refusals that leave the bundle as it was."""

import json
import logging
import math
import shutil
import subprocess
import sys

import onnx
import pytest
from onnx import numpy_helper

from creps.calib import bars, cli, fp16, sensitivity, speed
from creps.checkpoint import save_checkpoint
from creps.runtime.bundle import file_entry, read_bundle, sha256_file, write_manifest
from creps.runtime import Runtime
from creps.runtime.backends import available_cores
from creps.runtime.cpu import INT8_KERNEL_FLAGS, cpu, exact_weight_bits
from in_process import in_process
from tiny_models import random_generator

# Seconds, not minutes. The plan on the jobs alone: with ranges from 8 latents the tiny model's
# INT8 misses 45 dB on other latents at the first layer (tests/calib/test_int8.py checks --plan-seeds' curve).
SMALL = ["--seeds", "0,1", "--sizes", "24x24,37x13", "--range-seeds", "8", "--plan-seeds", "0"]


def calib(*args):
    return subprocess.run([sys.executable, "-c", "from creps.calib.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=600)


def test_fp16_and_int8_graphs_land_in_the_manifest(tiny_G, tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(ckpt, tiny_G, tiny_G.cfg)
    report = tmp_path / "report.json"
    done = calib("--bundle", str(bundle), "--int8", "--network", str(ckpt), *SMALL, "--report", str(report))
    assert done.returncode == 0, done.stderr
    assert "fp16: predicted error vs fp32" in done.stdout and "int8: measured error vs fp32" in done.stdout
    assert "pre-processing" not in done.stderr and "WARNING" not in done.stderr  # ONNX Runtime's quantizer advice
    graphs = read_bundle(bundle).graphs  # verifies every sha256
    assert {"lines.fp16", "pixels.fp16", "lines.int8", "pixels.int8"} <= set(graphs)
    assert graphs["pixels.fp16"]["precision"] == "fp16"
    for stage in ("lines", "pixels"):  # Q/DQ graphs are in the activation form; a stage wholly float is the export
        quantized = graphs[f"{stage}.int8"]["qdq"]["int8_layers"] > 0
        assert graphs[f"{stage}.int8"]["modulation"] == ("activation" if quantized else graphs[stage]["modulation"])
        assert graphs[f"{stage}.int8"]["weight_bits"] == exact_weight_bits()
    assert graphs["lines.fp16"]["predicted_error"]["max_abs"] < 1e-2
    assert graphs["lines.fp16"]["fp32_islands"]  # at least the Fourier phases
    data = json.loads(report.read_text())
    assert data["error_jobs"][1] == {"seed": 1, "psi": 0.7, "size": "37x13"}
    assert data["bars"] == bars.PRECISION_BARS
    # The bar is enforced at the default target (the bar's 45 dB) and the plan is in the manifest.
    psnr = graphs["pixels.int8"]["measured_error"]["uint8_psnr_db"]
    assert psnr is None or psnr >= 45  # None: identical, where INT8 is faster in neither stage of the tiny model
    assert graphs["lines.int8"]["target_uint8_psnr_db"] == 45.0
    plan = read_bundle(bundle).manifest["verification"]["precision"]["int8"]["plan"]
    assert sorted(plan["float_layers"]) == sorted(f"{s}/{name}" for s in ("lines", "pixels")
                                                  for name in graphs[f"{s}.int8"]["float_layers"])
    assert f"kept in float: {', '.join(plan['float_layers']) or 'none'}" in done.stdout
    assert f"with {exact_weight_bits()}-bit weights" in done.stdout and "% of the work in float" in done.stdout
    # --int8-stages auto: the plan's graphs timed here, INT8 only where it ran faster, the rest the exported graphs.
    assert set(plan["stage_speed"]) == {"lines", "pixels"}
    for stage in ("lines", "pixels"):
        if stage in plan["int8_stages"]:
            assert plan["stage_speed"][stage]["speedup"] >= speed.MIN_SPEEDUP
            assert graphs[f"{stage}.int8"]["cpu_speedup"] == {  # what `auto` on the CPU reads
                "speedup": round(plan["stage_speed"][stage]["speedup"], 3), "cpu": cpu()[0],
                "int8_flags": sorted(cpu()[1] & INT8_KERNEL_FLAGS), "cores": available_cores()}
        else:
            assert graphs[f"{stage}.int8"]["qdq"]["int8_layers"] == 0 and graphs[f"{stage}.int8"]["cpu_speedup"] is None
    with Runtime(bundle, backend="ort-cpu", precision="auto") as runtime:
        assert runtime.precision == ("int8" if plan["int8_stages"] else "fp32")


def test_a_stage_the_plan_keeps_in_float_gets_the_exported_graph(bundle_and_checkpoint, monkeypatch, capsys):
    """No layer holds 200 dB, so both stages stay float: their int8 graphs are the FP32 ones, and
    the 7-bit width asked for is recorded."""
    bundle, ckpt = bundle_and_checkpoint
    code, err = run(monkeypatch, capsys, "--bundle", bundle, "--no-fp16", "--int8", "--network", ckpt,
                    "--target-psnr", "200", "--weight-bits", "7", *SMALL)
    assert code == 0, err
    graphs = read_bundle(bundle).graphs
    for stage in ("lines", "pixels"):
        entry = graphs[f"{stage}.int8"]
        assert entry["qdq"]["int8_layers"] == 0 and entry["weight_bits"] == 7 and entry["cpu_speedup"] is None
        assert entry["modulation"] == graphs[stage]["modulation"] and entry["measured_error"]["uint8_psnr_db"] is None
        assert onnx.load(f"{bundle}/{entry['file']}").graph == onnx.load(f"{bundle}/{graphs[stage]['file']}").graph


@pytest.mark.parametrize("args, message", [
    (["--bundle", "/no/such/bundle"], "no such bundle folder"),
    (["--bundle", ".", "--no-fp16"], "nothing to do"),
    (["--bundle", ".", "--sizes", "12xq"], "size"),
    (["--bundle", ".", "--trunc", "a,b"], "comma-separated"),
    (["--bundle", ".", "--int8", "--int8-stages", "lines,mapping"], "--int8-stages"),
])
def test_bad_input_is_one_line(args, message):
    done = calib(*args)
    assert done.returncode == 1 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_int8_on_folded_graphs_without_checkpoint_says_what_to_pass(tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    done = calib("--bundle", str(bundle), "--no-fp16", "--int8")
    assert done.returncode == 1 and "--network" in done.stderr


def run(monkeypatch, capsys, *args) -> tuple[int, str]:
    """creps-calib in this process (so a test can move a bar), with a one-option INT8 search
    (these tests are about refusals, not the search); (exit code, stderr as a terminal shows
    it: the progress bars, which clear themselves, gone)."""
    monkeypatch.setattr(sensitivity, "ALPHAS", (0.0,))
    monkeypatch.setattr(sensitivity, "SEARCH_METHODS", ("minmax",))
    code, _, err = in_process(monkeypatch, capsys, cli.cli, "creps-calib", *args)
    return code, err.split("\r")[-1]


def snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture
def bundle_and_checkpoint(tiny_G, tiny_bundle, tmp_path):
    """A copy of the tiny bundle that records its checkpoint as creps-export --network does."""
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(ckpt, tiny_G, tiny_G.cfg)
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    manifest = read_bundle(bundle).manifest
    manifest["source"] = {"file": ckpt.name, "sha256": sha256_file(ckpt)}
    write_manifest(bundle, {k: v for k, v in manifest.items() if k not in ("format", "format_version")})
    return bundle, ckpt


def test_int8_below_the_bar_is_refused_and_kept_only_with_force(bundle_and_checkpoint, monkeypatch, capsys, caplog):
    bundle, ckpt = bundle_and_checkpoint
    before = snapshot(bundle)
    monkeypatch.setitem(bars.PRECISION_BARS, "int8", {"uint8_psnr_db": 200.0, "max_abs": 1e-9})  # none meets it
    args = ["--bundle", bundle, "--no-fp16", "--int8", "--network", ckpt, "--target-psnr", "0",
            "--int8-stages", "lines,pixels", *SMALL]  # every layer INT8, however fast
    code, err = run(monkeypatch, capsys, *args)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "int8 graphs below the int8 bar (uint8 PSNR" in err and "nothing written" in err and "--force" in err
    assert snapshot(bundle) == before
    with caplog.at_level(logging.WARNING):
        code, err = run(monkeypatch, capsys, *args, "--force")
    assert code == 0, err
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "keeping int8 graphs below the int8 bar" in warnings[0]
    graphs = read_bundle(bundle).graphs
    assert graphs["lines.int8"]["qdq"]["int8_layers"] > 0 and graphs["pixels.int8"]["qdq"]["int8_layers"] > 0
    assert graphs["lines.int8"]["cpu_speedup"] is None and graphs["pixels.int8"]["cpu_speedup"] is None  # named, not timed


def test_int8_without_the_checkpoint_is_refused_before_any_fp16_work(tiny_bundle, tmp_path, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise AssertionError("the FP16 pass ran before the arguments were checked")

    monkeypatch.setattr(fp16, "analyse", fail)
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    code, err = run(monkeypatch, capsys, "--bundle", bundle, "--int8", *SMALL)
    assert code == 1 and "--network" in err and len(err.strip().splitlines()) == 1


def test_another_models_checkpoint_is_refused(bundle_and_checkpoint, tmp_path, monkeypatch, capsys):
    bundle, _ = bundle_and_checkpoint
    other = tmp_path / "other.safetensors"
    G = random_generator(seed=1)
    save_checkpoint(other, G, G.cfg)
    before = snapshot(bundle)
    code, err = run(monkeypatch, capsys, "--bundle", bundle, "--int8", "--network", other, *SMALL)
    assert code == 1 and f"{other} is not the checkpoint {bundle} was exported from (tiny.safetensors)" in err
    assert snapshot(bundle) == before


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_bundle_whose_fp32_images_are_not_finite_is_refused(tiny_bundle, tmp_path, monkeypatch, capsys, value):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    mapping = onnx.load(bundle / "mapping.onnx")  # one weight of the mapping network: every image depends on it
    weight = next(t for t in mapping.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and t.dims)
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] = value
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(mapping, bundle / "mapping.onnx")
    manifest = read_bundle(bundle, verify_hashes=False).manifest
    manifest["graphs"]["mapping"] = {**manifest["graphs"]["mapping"],
                                     **file_entry(bundle, "mapping.onnx", manifest["graphs"]["mapping"]["precision"])}
    write_manifest(bundle, {k: v for k, v in manifest.items() if k not in ("format", "format_version")})
    before = snapshot(bundle)
    code, err = run(monkeypatch, capsys, "--bundle", bundle, *SMALL)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "the FP32 graphs give NaN or Inf values" in err
    assert snapshot(bundle) == before
