"""The stage contract (creps.runtime.stages) against DESIGN's stage table written out here by
hand, its output shapes, and the manifest's recorded "stages" section (format versions 1, 2)."""

from __future__ import annotations

import json

import pytest

from creps.errors import BundleError
from creps.runtime import stages
from creps.runtime.bundle import MANIFEST, file_entry, read_bundle, write_manifest

# DESIGN.md, "Stages": mapping z [N, z_dim], psi [1] -> ws [N, num_ws, w_dim]; lines ws, ys [H],
# xs [W] -> cols [N, B, 32, H, R], rows [N, B, 32, W, R]; pixels ws, cols, rows -> img [N, 3, h, w];
# generator z, psi, ys, xs -> img. 32 is biline_channels, 3 img_channels, B num_blocks, R rank.
F32 = "float32"
Z = {"name": "z", "dtype": F32, "axes": ["batch", "z_dim"]}
PSI = {"name": "psi", "dtype": F32, "axes": [1]}
WS = {"name": "ws", "dtype": F32, "axes": ["batch", "num_ws", "w_dim"]}
YS = {"name": "ys", "dtype": F32, "axes": ["height"]}
XS = {"name": "xs", "dtype": F32, "axes": ["width"]}
COLS = {"name": "cols", "dtype": F32, "axes": ["batch", "num_blocks", "biline_channels", "height", "rank"]}
ROWS = {"name": "rows", "dtype": F32, "axes": ["batch", "num_blocks", "biline_channels", "width", "rank"]}
IMG = {"name": "img", "dtype": F32, "axes": ["batch", "img_channels", "height", "width"]}
DESIGN_TABLE = {
    "mapping": {"inputs": [Z, PSI], "outputs": [WS]},
    "lines": {"inputs": [WS, YS, XS], "outputs": [COLS, ROWS]},
    "pixels": {"inputs": [WS, COLS, ROWS], "outputs": [IMG]},
    "generator": {"inputs": [Z, PSI, YS, XS], "outputs": [IMG]},
}
MODEL = {"z_dim": 8, "w_dim": 6, "num_ws": 5, "num_blocks": 1, "blocks": [8], "rank": 2, "biline_channels": 4,
         "img_resolution": 8, "img_channels": 3, "mapping_layers": 2, "channel_base": 64, "channel_max": 8,
         "truncation_cutoff": None}


def test_the_contract_is_designs_stage_table():
    assert stages.to_manifest() == DESIGN_TABLE
    assert json.dumps(stages.to_manifest()) == json.dumps(DESIGN_TABLE)  # the same order, too
    assert stages.difference(DESIGN_TABLE) is None
    assert stages.DYNAMIC == ("batch", "height", "width")
    assert stages.RUN_STAGES == ("mapping", "lines", "pixels")


def test_derived_views():
    assert stages.dynamic_axes("pixels") == {"ws": {0: "batch"}, "cols": {0: "batch", 3: "height"},
                                             "rows": {0: "batch", 3: "width"}}
    assert stages.dynamic_axes("mapping") == {"z": {0: "batch"}}  # psi is fixed at 1
    assert stages.carriers("pixels", "height") == [("cols", 3)]
    assert stages.carriers("generator", "width") == [("xs", 0)]
    assert stages.spatial_inputs("lines") == {"ys", "xs"} and stages.spatial_inputs("pixels") == {"cols", "rows"}
    assert stages.graph_key("pixels") == "pixels" and stages.graph_key("pixels", "fp16") == "pixels.fp16"


@pytest.mark.parametrize("n, h, w", [(1, 1, 1), (2, 7, 9), (3, 33, 1), (1, 1, 2049), (5, 255, 17)])
def test_output_shapes(n, h, w):
    B, C, R = MODEL["num_blocks"], MODEL["biline_channels"], MODEL["rank"]
    ws = (n, 5, 6)
    cols, rows, img = (n, B, C, h, R), (n, B, C, w, R), (n, 3, h, w)
    assert stages.output_shapes(MODEL, "mapping", {"z": (n, 8), "psi": (1,)}) == {"ws": ws}
    assert stages.output_shapes(MODEL, "lines", {"ws": ws, "ys": (h,), "xs": (w,)}) == {"cols": cols, "rows": rows}
    assert stages.output_shapes(MODEL, "pixels", {"ws": ws, "cols": cols, "rows": rows}) == {"img": img}
    assert stages.output_shapes(MODEL, "generator", {"z": (n, 8), "psi": (1,), "ys": (h,), "xs": (w,)}) == {
        "img": img}
    assert stages.input_shapes(MODEL, "pixels", {"batch": n, "height": h, "width": w}) == {
        "ws": ws, "cols": cols, "rows": rows}


def test_inputs_that_disagree_on_an_axis():
    with pytest.raises(ValueError, match="pixels: cols has batch 2, ws has batch 1"):
        stages.output_shapes(MODEL, "pixels", {"ws": (1, 5, 6), "cols": (2, 1, 4, 3, 2), "rows": (1, 1, 4, 3, 2)})


# ---- the recorded section in a bundle -------------------------------------------------------


@pytest.fixture
def folder(tmp_path):
    """A format-2 bundle with one stand-in graph file (mapping) as this creps writes it."""
    (tmp_path / "mapping.onnx").write_bytes(b"graph bytes")
    inputs = [{"name": "z", "dtype": F32, "shape": ["batch", 8]}, {"name": "psi", "dtype": F32, "shape": [1]}]
    outputs = [{"name": "ws", "dtype": F32, "shape": ["batch", 5, 6]}]
    graphs = {"mapping": file_entry(tmp_path, "mapping.onnx", "fp32", stage="mapping", inputs=inputs,
                                    outputs=outputs)}
    write_manifest(tmp_path, {"model": MODEL, "graphs": graphs})
    return tmp_path


def edit(folder, change):
    manifest = json.loads((folder / MANIFEST).read_text())
    change(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest))


def refused(folder) -> str:
    with pytest.raises(BundleError) as info:
        read_bundle(folder)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_the_writer_records_format_2_and_the_contract(folder):
    manifest = read_bundle(folder).manifest
    assert manifest["format_version"] == 2 and manifest["stages"] == DESIGN_TABLE


def test_a_manifest_of_format_1_still_reads(folder):
    edit(folder, lambda m: (m.update(format_version=1), m.pop("stages")))
    assert read_bundle(folder).manifest["format_version"] == 1
    # Written again (creps-calib, engines), it becomes format 2 with the contract recorded.
    write_manifest(folder, read_bundle(folder).manifest)
    assert read_bundle(folder).manifest["stages"] == DESIGN_TABLE


@pytest.mark.parametrize("change, difference", [
    (lambda s: s["lines"]["outputs"][1]["axes"].__setitem__(3, "height"),
     'stages.lines.outputs[1].axes[3] is "height", this creps has "width"'),
    (lambda s: s["mapping"]["inputs"].reverse(), 'stages.mapping.inputs[0].name is "psi", this creps has "z"'),
    (lambda s: s["mapping"]["inputs"][1]["axes"].__setitem__(0, 1.0), "stages.mapping.inputs[1].axes[0] is 1.0"),
    (lambda s: s["pixels"]["outputs"][0].update(dtype="float16"), 'pixels.outputs[0].dtype is "float16"'),
    (lambda s: s["pixels"]["inputs"].pop(), "stages.pixels.inputs has 2 entries, this creps has 3"),
    (lambda s: s.pop("generator"), 'stages lacks "generator"'),
    (lambda s: s.update(decoder={}), 'stages has an unknown "decoder"'),
])
def test_an_edited_stages_section_is_refused(folder, change, difference):
    edit(folder, lambda m: change(m["stages"]))
    message = refused(folder)
    assert difference in message
    assert message.startswith(f"{folder}: manifest stages contradict this creps's stage contract: ")
    assert message.endswith("; re-export the bundle")


def test_format_2_needs_the_section_and_format_1_may_not_contradict_it(folder):
    edit(folder, lambda m: m.pop("stages"))
    assert "stages is null, not an object" in refused(folder)
    edit(folder, lambda m: m.update(format_version=1, stages={"mapping": {}}))
    assert 'stages.mapping lacks "inputs"' in refused(folder)


@pytest.mark.parametrize("version", [3, 0, True, 2.0, "2"])
def test_other_versions_are_refused(folder, version):
    edit(folder, lambda m: m.update(format_version=version))
    assert f"bundle format version {version!r}, this creps reads versions 1 and 2; re-export" in refused(folder)


def test_the_runtimes_limits_come_from_every_input_that_carries_an_axis():
    from creps.runtime.backends import Backend
    from creps.runtime.generate import limits_of
    from creps.runtime.tiling import UNLIMITED

    class Ranged(Backend):
        ranges = {("mapping", "z"): [(1, 8), (8, 8)], ("lines", "ws"): [(2, 6), (5, 5), (6, 6)],
                  ("lines", "xs"): [(3, 40)], ("pixels", "cols"): [(1, 7), (1, 1), (4, 4), (5, 9), (2, 2)],
                  ("pixels", "rows"): [(1, 4), (1, 1), (4, 4), (1, 11), (2, 2)]}

        def shape_range(self, stage, input):
            return self.ranges.get((stage, input))

    limits = limits_of(Ranged())
    assert limits.batch == (2, 4)  # every batch range at once: z, ws, cols, rows
    assert (limits.line_height, limits.line_width) == (UNLIMITED, (3, 40))
    assert (limits.tile_height, limits.tile_width) == ((5, 9), (1, 11))
