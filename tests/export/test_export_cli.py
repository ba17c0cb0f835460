"""creps-export on the command line: help, a whole run, and one-line refusals that leave nothing behind."""

from __future__ import annotations

import shutil

import pytest

from creps import generate
from creps.export import cli, writer
from creps.runtime.bundle import file_entry, read_bundle, sha256_file, write_manifest

from export_support import copy_stage_from
from in_process import in_process


def run(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    return in_process(monkeypatch, capsys, cli.cli, "creps-export", *args)


def test_help_has_an_example(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "--help")
    assert code == 0
    assert "creps-export --network" in out and "--onnx" in out and "--no-verify" in out and "--fused" in out


def test_export_run_writes_a_bundle(checkpoint, bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(writer, "export_stage", copy_stage_from(bundle))
    out_dir = tmp_path / "b"
    code, out, err = run(monkeypatch, capsys, "--network", checkpoint, "--out", out_dir, "--onnx", "--fused")
    assert code == 0, err
    assert f"wrote {out_dir}" in out
    manifest = read_bundle(out_dir).manifest
    assert manifest["source"]["sha256"] == sha256_file(checkpoint)
    assert manifest["verification"]["max_abs_error"] < 1e-4  # verified by default
    assert "generator" in manifest["graphs"]
    code, _, err = run(monkeypatch, capsys, "--network", checkpoint, "--out", out_dir, "--onnx")
    assert code == 1 and err.count("\n") == 1 and "exists; choose another --out or pass --force" in err
    code, _, err = run(monkeypatch, capsys, "--network", checkpoint, "--out", out_dir, "--onnx", "--force",
                       "--no-verify")
    assert code == 0, err
    assert "verification" not in read_bundle(out_dir).manifest


@pytest.mark.parametrize("case,message", [
    ("missing", "no such checkpoint file"),
    ("corrupt", "not a readable safetensors checkpoint"),
    ("no-onnx", "nothing to export: pass --onnx"),
    ("opset", "'--opset': 15 is not in the range"),
    ("unwritable", "cannot write the bundle"),
])
def test_bad_input_is_one_line_and_leaves_nothing(checkpoint, tmp_path, monkeypatch, capsys, case, message):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be made")
    out = tmp_path / "out"
    args = {
        "missing": ["--network", tmp_path / "nope.safetensors", "--out", out, "--onnx"],
        "corrupt": ["--network", corrupt, "--out", out, "--onnx"],
        "no-onnx": ["--network", checkpoint, "--out", out],
        "opset": ["--network", checkpoint, "--out", out, "--onnx", "--opset", "15"],
        "unwritable": ["--network", checkpoint, "--out", blocker / "sub" / "b", "--onnx"],
    }[case]
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.safetensors", "file"]


def test_default_network_missing_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(generate, "DEFAULT_NETWORK", tmp_path / "network.safetensors")
    code, _, err = run(monkeypatch, capsys, "--out", tmp_path / "b", "--onnx")
    assert code == 1 and "no --network given and no default model is bundled" in err
    assert list(tmp_path.iterdir()) == []


def test_default_network_is_used_when_present(checkpoint, bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(generate, "DEFAULT_NETWORK", checkpoint)
    monkeypatch.setattr(writer, "export_stage", copy_stage_from(bundle))
    code, _, err = run(monkeypatch, capsys, "--out", tmp_path / "b", "--onnx", "--no-verify")
    assert code == 0, err
    assert read_bundle(tmp_path / "b").manifest["source"]["sha256"] == sha256_file(checkpoint)


def test_dry_run_needs_a_bundle_or_a_named_checkpoint(tmp_path, monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, "--out", tmp_path / "typo", "--trt", "--dry-run")
    assert code == 1 and err.count("\n") == 1 and out == ""
    assert f"{tmp_path / 'typo'} is not a bundle" in err and "--network CKPT to plan for a checkpoint" in err
    assert list(tmp_path.iterdir()) == []


def test_a_plan_without_sizes_says_it_covers_the_training_resolution(bundle, monkeypatch, capsys):
    resolution = read_bundle(bundle).manifest["model"]["img_resolution"]
    code, out, err = run(monkeypatch, capsys, "--out", bundle, "--trt", "--dry-run")
    assert code == 0, err
    first, second = out.splitlines()[:2]
    assert first == f"no --sizes: planning for the training resolution {resolution}x{resolution} only"
    assert second.startswith(f"TensorRT build plan: sizes {resolution}x{resolution}, batch 1")
    _, out, _ = run(monkeypatch, capsys, "--help")
    assert "(default: the model's training resolution only)" in " ".join(out.split())


def test_fp16_graphs_already_there_are_said_and_kept(bundle, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    manifest = read_bundle(copy).manifest
    for stage in ("lines", "pixels"):  # stand-ins: what counts is that the manifest lists them
        shutil.copy(copy / f"{stage}.onnx", copy / f"{stage}.fp16.onnx")
        manifest["graphs"][f"{stage}.fp16"] = {**manifest["graphs"][stage],
                                               **file_entry(copy, f"{stage}.fp16.onnx", "fp16")}
    write_manifest(copy, {k: v for k, v in manifest.items() if k not in ("format", "format_version")})
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    code, out, err = run(monkeypatch, capsys, "--out", copy, "--fp16")
    assert code == 0, err
    assert out == f"fp16 graphs already in {copy}, kept (creps-calib rebuilds them); nothing to do\n"
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before
