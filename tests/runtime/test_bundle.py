"""The bundle reader (torch-free): a valid bundle loads; a missing file, a wrong hash, another
format version or a broken manifest each give one clear BundleError."""

from __future__ import annotations

import json

import pytest

from creps.errors import BundleError
from creps.runtime.bundle import FORMAT_VERSION, MANIFEST, file_entry, read_bundle, write_manifest

MODEL = {"z_dim": 8, "w_dim": 8, "num_ws": 5, "num_blocks": 1, "blocks": [8], "rank": 2, "biline_channels": 4,
         "img_resolution": 8, "img_channels": 3, "truncation_cutoff": None}


@pytest.fixture
def folder(tmp_path):
    """A small bundle: two stand-in graph files and a manifest listing them."""
    graphs = {}
    for stage in ("mapping", "lines"):
        (tmp_path / f"{stage}.onnx").write_bytes(f"graph bytes of {stage}".encode())
        graphs[stage] = file_entry(tmp_path, f"{stage}.onnx", "fp32", stage=stage, opset=18)
    write_manifest(tmp_path, {"model": MODEL, "graphs": graphs})
    return tmp_path


def edit_manifest(folder, change):
    path = folder / MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_valid_bundle_reads(folder):
    bundle = read_bundle(folder)
    assert bundle.manifest["format_version"] == FORMAT_VERSION
    assert bundle.graph_path("lines") == folder / "lines.onnx"
    assert bundle.model["truncation_cutoff"] is None


def test_missing_graph_file(folder):
    (folder / "lines.onnx").unlink()
    with pytest.raises(BundleError, match=r"lines\.onnx \(lines\) is missing; re-export the bundle"):
        read_bundle(folder)


def test_wrong_hash(folder):
    (folder / "mapping.onnx").write_bytes(b"altered")
    with pytest.raises(BundleError, match=r"mapping\.onnx \(mapping\) does not match its sha256"):
        read_bundle(folder)
    assert read_bundle(folder, verify_hashes=False).graphs["mapping"]["file"] == "mapping.onnx"


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 0, "1", None])
def test_unknown_format_version(folder, version):
    edit_manifest(folder, lambda m: m.update(format_version=version))
    with pytest.raises(BundleError, match=f"bundle format version {version!r}, this creps reads version"):
        read_bundle(folder)


@pytest.mark.parametrize("change,message", [
    (lambda m: m.update(format="something-else"), "not a creps bundle"),
    (lambda m: m["model"].pop("rank"), "model section lacks rank"),
    (lambda m: m.update(graphs={}), "lists no graphs"),
    (lambda m: m["graphs"]["lines"].update(file="../lines.onnx"), "must be a plain name inside the bundle"),
    (lambda m: m["graphs"]["lines"].update(precision="fp64"), "unknown precision"),
    (lambda m: m["graphs"]["lines"].update(stage="decoder"), "unknown stage"),
])
def test_broken_manifest(folder, change, message):
    edit_manifest(folder, change)
    with pytest.raises(BundleError, match=message):
        read_bundle(folder)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="no such bundle folder"):
        read_bundle(tmp_path / "absent")
    with pytest.raises(BundleError, match="no manifest.json"):
        read_bundle(tmp_path)
    (tmp_path / MANIFEST).write_text("{truncated")
    with pytest.raises(BundleError, match="unreadable manifest"):
        read_bundle(tmp_path)
