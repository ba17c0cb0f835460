"""creps-export on the command line: help, a whole run, and one-line refusals that leave nothing behind."""

from __future__ import annotations

import sys

import pytest

from creps import generate
from creps.export import cli, writer
from creps.runtime.bundle import read_bundle, sha256_file

from export_support import copy_stage_from


def run(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["creps-export", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


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
