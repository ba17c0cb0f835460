"""The bundle reader (torch-free): a valid bundle loads; a missing file, a wrong hash, another
format version or a broken manifest each give one clear BundleError."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from creps.errors import BundleError
from creps.runtime.bundle import FORMAT_VERSION, MANIFEST, file_entry, read_bundle, write_manifest

MODEL = {"z_dim": 8, "w_dim": 8, "num_ws": 5, "num_blocks": 1, "blocks": [8], "rank": 2, "biline_channels": 4,
         "img_resolution": 8, "img_channels": 3, "mapping_layers": 2, "channel_base": 64, "channel_max": 8,
         "truncation_cutoff": None}
# DESIGN's stage table for MODEL, written out by hand: (name, shape) of inputs and outputs.
WS = ("ws", ["batch", 5, 8])
SIGNATURES = {
    "mapping": ([("z", ["batch", 8]), ("psi", [1])], [WS]),
    "lines": ([WS, ("ys", ["height"]), ("xs", ["width"])],
              [("cols", ["batch", 1, 4, "height", 2]), ("rows", ["batch", 1, 4, "width", 2])]),
}


def tensors(pairs):
    return [{"name": name, "dtype": "float32", "shape": shape} for name, shape in pairs]


@pytest.fixture
def folder(tmp_path):
    """A small bundle: two stand-in graph files and a manifest listing them."""
    graphs = {}
    for stage, (inputs, outputs) in SIGNATURES.items():
        (tmp_path / f"{stage}.onnx").write_bytes(f"graph bytes of {stage}".encode())
        graphs[stage] = file_entry(tmp_path, f"{stage}.onnx", "fp32", stage=stage, opset=18,
                                   inputs=tensors(inputs), outputs=tensors(outputs))
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
    with pytest.raises(BundleError, match=f"bundle format version {version!r}, this creps reads versions 1 and 2;"):
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


# ---- a manifest edited against its graphs (the manifest itself is not hashed) -------------


@pytest.fixture
def edited(tiny_bundle, tmp_path):
    """A copy of the real tiny bundle (z_dim 32, w_dim 32, 32x32: 3 blocks, 9 ws, rank 8)."""
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    return copy


def refused(folder, match, runtime=False) -> str:
    """The one-line BundleError that reading (or loading into a Runtime) gives."""
    with pytest.raises(BundleError, match=match) as info:
        if runtime:
            from creps.runtime import Runtime

            Runtime(folder, backend="ort-cpu")
        else:
            read_bundle(folder)
    assert "\n" not in str(info.value)
    return str(info.value)


# Each field moved to another plausible value; before the checks these gave an ONNX Runtime
# InvalidArgument traceback (z_dim), "could not broadcast" (rank) or a silently other size.
@pytest.mark.parametrize("field, value", [
    ("z_dim", 64), ("w_dim", 16), ("num_ws", 10), ("num_blocks", 4), ("rank", 4), ("biline_channels", 16),
    ("img_channels", 1), ("img_resolution", 64), ("img_resolution", 33), ("blocks", [8, 16, 64]),
    ("blocks", [8, 16, 32, 64]), ("truncation_cutoff", 10),
])
def test_an_edited_model_field_is_named(edited, field, value):
    read_bundle(edited)
    edit_manifest(edited, lambda m: m["model"].update({field: value}))
    message = refused(edited, rf"manifest model {field} (= )?{re.escape(json.dumps(value))}")
    assert "restore manifest.json or re-export the bundle" in message
    refused(edited, f"model {field}", runtime=True)


@pytest.mark.parametrize("value", ["32", -32, 0, True, 32.0, 2**31, 10**30, None, [32], {"z": 32}])
def test_a_model_field_of_the_wrong_type_is_named(edited, value):
    edit_manifest(edited, lambda m: m["model"].update(z_dim=value))
    refused(edited, rf"manifest model z_dim = {re.escape(json.dumps(value))} must be an integer in 1\.\.")


@pytest.mark.parametrize("value", [-1, 1.5, "none", False])
def test_truncation_cutoff_is_null_or_a_count(edited, value):
    edit_manifest(edited, lambda m: m["model"].update(truncation_cutoff=value))
    refused(edited, "manifest model truncation_cutoff = .* must be null or a count")


def test_unknown_and_missing_model_fields(edited):
    edit_manifest(edited, lambda m: m["model"].update(zdim=32))
    refused(edited, "model section has unknown field zdim")
    edit_manifest(edited, lambda m: (m["model"].pop("zdim"), m["model"].pop("channel_max")))
    refused(edited, "model section lacks channel_max")
    edit_manifest(edited, lambda m: m.update(model=[1, 2]))
    refused(edited, "manifest has no model section")


def test_model_and_recorded_shapes_edited_together_meet_the_graph_file(edited):
    def change(m):
        m["model"]["z_dim"] = 33
        m["graphs"]["mapping"]["inputs"][0]["shape"][1] = 33
    edit_manifest(edited, change)
    read_bundle(edited)  # consistent in itself; only the graph file can tell
    refused(edited, r"mapping\.onnx: z has shape \['batch', 32\], the manifest records \['batch', 33\]",
            runtime=True)


@pytest.mark.parametrize("change, message", [
    (lambda g: g["lines"]["outputs"][0].update(shape=["batch", 3, 32, "height"]), "cols has shape .* rank 5"),
    (lambda g: g["lines"]["outputs"][0].update(dtype="float16"), "cols has dtype 'float16', the runtime feeds"),
    (lambda g: g["mapping"]["inputs"][0]["shape"].__setitem__(0, 1), r"z axis 0 \(batch\) is fixed at 1"),
    (lambda g: g["mapping"]["inputs"][1].update(shape=[2]), r"psi has shape \[2\], the stage contract says \[1\]"),
    (lambda g: g["pixels"]["inputs"][0].update(name="w"), r'inputs \["w", "cols", "rows"\], the pixels stage has'),
    (lambda g: g["pixels"].pop("outputs"), "graph pixels: outputs is not a list of tensors"),
])
def test_a_recorded_signature_against_the_stage_contract(edited, change, message):
    edit_manifest(edited, lambda m: change(m["graphs"]))
    refused(edited, message)


@pytest.mark.parametrize("text, message", [
    ("{truncated", "unreadable manifest"),
    ("[" * 100000 + "]" * 100000, "unreadable manifest"),  # deeper than the JSON decoder recurses
    ('{"format": ' + "9" * 5000 + "}", "unreadable manifest"),  # longer than int() reads
    (b"\xff\xfe{}", "unreadable manifest"),
    ("[]", "manifest is not a JSON object"),
    ('{"format": "creps-bundle", "format_version": 1.0}', "bundle format version 1.0"),
])
def test_wrong_json(edited, text, message):
    path = edited / MANIFEST
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    refused(edited, message)


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(engines=[]), "manifest engines is not an object"),
    (lambda m: m["graphs"]["lines"].update(file="lines\0.onnx"), "must be a plain name inside the bundle"),
    (lambda m: m["graphs"]["lines"].update(file=""), "must be a plain name inside the bundle"),
    (lambda m: m["graphs"]["lines"].update(precision=["fp32"]), "entry lines lacks precision"),
])
def test_entries_of_the_wrong_type(edited, change, message):
    edit_manifest(edited, change)
    refused(edited, message)
