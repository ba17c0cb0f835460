"""The bundle export_bundle writes: manifest contents, parity record, refusal and atomicity."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import onnx
import pytest
import torch

import creps
from creps.errors import ExportError
from creps.export import export_bundle, verify, writer
from creps.runtime.bundle import read_bundle, sha256_file

from export_support import CONFIG, copy_stage_from


def test_manifest_describes_model_graphs_and_source(bundle, checkpoint):
    b = read_bundle(bundle)
    m = b.manifest
    assert m["format_version"] == 2
    assert m["model"] == {
        "z_dim": 32, "w_dim": 24, "num_ws": CONFIG.num_ws, "num_blocks": 3, "blocks": [8, 16, 32], "rank": 4,
        "biline_channels": 32, "img_resolution": 32, "img_channels": 3, "mapping_layers": 2,
        "channel_base": 1024, "channel_max": 48, "truncation_cutoff": None,
    }
    assert m["source"] == {"file": "tiny.safetensors", "sha256": sha256_file(checkpoint)}
    assert m["exporter"]["version"] == creps.__version__
    assert m["exporter"]["torch"] == torch.__version__ and m["exporter"]["onnx"] == onnx.__version__
    assert sorted(b.graphs) == ["generator", "lines", "mapping", "pixels"]
    for stage, entry in b.graphs.items():
        assert entry["file"] == f"{stage}.onnx" and entry["precision"] == "fp32" and entry["opset"] == 18
        assert entry["sha256"] == sha256_file(bundle / entry["file"])
        assert entry["modulation"] == writer.MODULATION[stage]
    assert sorted(p.name for p in bundle.iterdir()) == sorted(
        ["manifest.json", "mapping.onnx", "lines.onnx", "pixels.onnx", "generator.onnx"])


def test_manifest_records_the_stage_contract_and_graphs_follow_it(bundle):
    m = read_bundle(bundle).manifest
    # DESIGN's stage table, as the manifest's "stages" section writes it (lists in call order).
    z, psi = ("z", ["batch", "z_dim"]), ("psi", [1])
    ws, ys, xs = ("ws", ["batch", "num_ws", "w_dim"]), ("ys", ["height"]), ("xs", ["width"])
    cols = ("cols", ["batch", "num_blocks", "biline_channels", "height", "rank"])
    rows = ("rows", ["batch", "num_blocks", "biline_channels", "width", "rank"])
    img = ("img", ["batch", "img_channels", "height", "width"])
    table = {"mapping": ([z, psi], [ws]), "lines": ([ws, ys, xs], [cols, rows]), "pixels": ([ws, cols, rows], [img]),
             "generator": ([z, psi, ys, xs], [img])}
    assert m["stages"] == {stage: {side: [{"name": n, "dtype": "float32", "axes": a} for n, a in tensors]
                                   for side, tensors in zip(("inputs", "outputs"), io)}
                           for stage, io in table.items()}
    # Each graph's IO: the table's names in call order, dynamic axes named as in the table.
    for stage, io in table.items():
        for side, tensors in zip(("inputs", "outputs"), io):
            assert m["graphs"][stage][side] == [
                {"name": n, "dtype": "float32",
                 "shape": [x if isinstance(x, int) or x in ("batch", "height", "width") else m["model"][x] for x in a]}
                for n, a in tensors]


def test_verification_record_covers_six_sizes_two_batches(bundle):
    record = read_bundle(bundle).manifest["verification"]
    cases = record["cases"]
    assert {c["case"] for c in cases} == {"square", "wide", "tall", "odd", "1xN", "window"}
    assert {c["batch"] for c in cases} == set(verify.BATCHES) and len(cases) == 12
    sizes = {(c["width"], c["height"]) for c in cases}
    assert any(w > h for w, h in sizes) and any(w < h for w, h in sizes) and any(w % 2 and h % 2 for w, h in sizes)
    assert any(1 in size for size in sizes)
    for case in cases:
        assert set(case["max_abs_error"]) == {"ws", "cols", "rows", "img", "generator"}
        assert case["max_abs_value"]["img"] < 5  # images scaled like a trained model's
        assert 0 <= max(case["max_abs_error"].values()) <= verify.TOLERANCE
    assert record["max_abs_error"] == max(max(c["max_abs_error"].values()) for c in cases)


def test_verification_catches_a_model_that_differs(generator, bundle):
    other = copy.deepcopy(generator)
    with torch.no_grad():
        other.synthesis.decoder_img.bias.add_(1e-3)
    with pytest.raises(ExportError, match=r"parity check failed: img differs .* at square 48x48"):
        verify.verify_bundle(other, bundle)
    assert verify.verify_bundle(generator, bundle)["max_abs_error"] <= verify.TOLERANCE


def test_existing_output_refused_and_untouched(generator, bundle):
    before = (bundle / "manifest.json").read_bytes()
    with pytest.raises(ExportError, match="exists; choose another --out or pass --force"):
        export_bundle(generator, bundle)
    assert (bundle / "manifest.json").read_bytes() == before
    with pytest.raises(ExportError, match="not a folder"):
        export_bundle(generator, bundle / "manifest.json", force=True)


def test_old_opset_refused(generator, tmp_path):
    with pytest.raises(ExportError, match="opset 16"):
        export_bundle(generator, tmp_path / "b", opset=16)
    assert list(tmp_path.iterdir()) == []


def test_failed_export_leaves_nothing_and_keeps_the_old_bundle(generator, bundle, tmp_path, monkeypatch):
    """A parity failure after every graph is written: no new bundle, no temporary folder."""
    def failing_verify(G, folder, *args, **kwargs):
        assert (folder / "manifest.json").is_file()  # the bundle was complete in its temporary folder
        raise ExportError("parity check failed (simulated)")

    monkeypatch.setattr(writer, "export_stage", copy_stage_from(bundle))
    monkeypatch.setattr(writer, "verify_bundle", failing_verify)
    old = tmp_path / "old"
    shutil.copytree(bundle, old)
    with pytest.raises(ExportError, match="simulated"):
        export_bundle(generator, tmp_path / "new")
    with pytest.raises(ExportError, match="simulated"):
        export_bundle(generator, old, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["old"]
    assert read_bundle(old).manifest == read_bundle(bundle).manifest


def test_force_replaces_and_no_verify_skips_parity(generator, bundle, tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "export_stage", copy_stage_from(bundle))
    out = tmp_path / "b"
    shutil.copytree(bundle, out)
    export_bundle(generator, out, force=True, verify=False)
    manifest = read_bundle(out).manifest
    assert "verification" not in manifest and sorted(manifest["graphs"]) == ["lines", "mapping", "pixels"]
    assert not (out / "generator.onnx").exists()


def test_unexportable_model_is_an_export_error(generator, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("Failed to export the model\nlong traceback")

    monkeypatch.setattr(writer, "export_stage", broken)
    with pytest.raises(ExportError, match=r"^cannot export the mapping stage of this model: Failed to export the model$"):
        export_bundle(generator, tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


def test_manifest_is_json_the_runtime_reads(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert read_bundle(bundle).manifest == manifest
    ios = {io["name"]: io["shape"] for io in manifest["graphs"]["lines"]["outputs"]}
    assert ios["cols"] == ["batch", 3, 32, "height", 4] and ios["rows"] == ["batch", 3, 32, "width", 4]
    assert np.isfinite(manifest["verification"]["max_abs_error"])
