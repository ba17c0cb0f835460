"""The exported graphs: stage-table IO, portable ops, no frozen sizes, and numbers from two consumers.

ONNX Runtime and onnx's ReferenceEvaluator (plain numpy, the ONNX spec) both run the graphs
at sizes and batches other than the export example, against the PyTorch model.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx.reference import ReferenceEvaluator

from creps import grid
from creps.export import graphs, stages
from creps.runtime.bundle import read_bundle

from export_support import CONFIG

N_BLOCKS, R, C = CONFIG.num_blocks, CONFIG.rank, CONFIG.biline_channels
EXPECTED_IO = {
    "mapping": ({"z": ["batch", CONFIG.z_dim], "psi": [1]}, {"ws": ["batch", CONFIG.num_ws, CONFIG.w_dim]}),
    "lines": ({"ws": ["batch", CONFIG.num_ws, CONFIG.w_dim], "ys": ["height"], "xs": ["width"]},
              {"cols": ["batch", N_BLOCKS, C, "height", R], "rows": ["batch", N_BLOCKS, C, "width", R]}),
    "pixels": ({"ws": ["batch", CONFIG.num_ws, CONFIG.w_dim], "cols": ["batch", N_BLOCKS, C, "height", R],
                "rows": ["batch", N_BLOCKS, C, "width", R]}, {"img": ["batch", 3, "height", "width"]}),
    "generator": ({"z": ["batch", CONFIG.z_dim], "psi": [1], "ys": ["height"], "xs": ["width"]},
                  {"img": ["batch", 3, "height", "width"]}),
}
STAGES = tuple(EXPECTED_IO)


def load(bundle, stage) -> onnx.ModelProto:
    return onnx.load(str(read_bundle(bundle).graph_path(stage)))


def shapes(values) -> dict:
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


@pytest.mark.parametrize("stage", STAGES)
def test_io_follows_the_stage_table(bundle, stage):
    model = load(bundle, stage)
    inputs, outputs = EXPECTED_IO[stage]
    assert shapes(model.graph.input) == inputs
    assert shapes(model.graph.output) == outputs
    entry = read_bundle(bundle).graph(stage)
    assert {io["name"]: io["shape"] for io in entry["inputs"]} == inputs
    assert {io["name"]: io["shape"] for io in entry["outputs"]} == outputs
    assert all(io["dtype"] == "float32" for io in entry["inputs"] + entry["outputs"])


@pytest.mark.parametrize("stage", STAGES)
def test_graph_is_portable(bundle, stage):
    model = load(bundle, stage)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= graphs.MIN_OPSET
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    assert "Einsum" not in {n.op_type for n in model.graph.node}
    # Reduction axes are initializers (opset >= 18 inputs), never attributes.
    for node in model.graph.node:
        if node.op_type.startswith("Reduce"):
            assert not any(a.name == "axes" for a in node.attribute), node.name


@pytest.mark.parametrize("stage", STAGES)
def test_no_size_frozen_from_the_example(bundle, stage):
    model = load(bundle, stage)
    example = {graphs.EXAMPLE_HEIGHT, graphs.EXAMPLE_WIDTH, graphs.EXAMPLE_HEIGHT * graphs.EXAMPLE_WIDTH,
               (graphs.EXAMPLE_HEIGHT + graphs.EXAMPLE_WIDTH) * R}
    assert not example & {CONFIG.z_dim, CONFIG.w_dim, C, R, N_BLOCKS, CONFIG.num_ws}
    tensors = list(model.graph.initializer) + [
        a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    for tensor in tensors:
        if tensor.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
            values = set(onnx.numpy_helper.to_array(tensor).ravel().tolist())
            assert not values & example, f"{stage}: {tensor.name} holds an example size {values & example}"


@pytest.mark.parametrize("stage", STAGES)
def test_shape_inference_keeps_axis_names(bundle, stage):
    model = onnx.shape_inference.infer_shapes(load(bundle, stage), strict_mode=True, data_prop=True)
    _, outputs = EXPECTED_IO[stage]
    assert shapes(model.graph.output) == outputs


@pytest.mark.parametrize("stage", STAGES)
def test_weights_are_folded_into_initializers(bundle, stage):
    """After cleanup no node computes from constants alone (weight * gain, transposes are folded)."""
    model = load(bundle, stage)
    constants = {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            constants.update(node.output)
            continue
        assert not all(i in constants for i in node.input if i), f"{stage}: {node.op_type} {node.name} not folded"
    if stage == "mapping":  # plain FC layers: MatMul straight from an initializer
        matmuls = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
        assert len(matmuls) == CONFIG.mapping_layers
        assert all(n.input[1] in constants for n in matmuls)


def test_cleanup_keeps_axes_and_removes_nodes(generator, bundle, tmp_path):
    raw = graphs.export_stage(generator, "pixels", tmp_path / "raw.onnx", 18, modulation="folded", cleanup=False)
    clean = load(bundle, "pixels")
    assert graphs.io_signature(clean) == graphs.io_signature(raw)
    assert len(clean.graph.node) < len(raw.graph.node)
    feeds = feeds_for(generator, "pixels", 1, 6, 5)
    (out_raw,) = ort.InferenceSession(str(tmp_path / "raw.onnx")).run(None, feeds)
    (out_clean,) = ort.InferenceSession(str(read_bundle(bundle).graph_path("pixels"))).run(None, feeds)
    np.testing.assert_allclose(out_clean, out_raw, atol=1e-5, rtol=0)


@torch.no_grad()
def stages_inputs(G, batch, height, width, seed=0):
    """ws, cols, rows of the PyTorch model at a size (window crossing the trained view)."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(batch, CONFIG.z_dim).astype(np.float32))
    ys, xs = grid.coords(width, height, grid.Window(-0.2, 0.1, 1.3, 0.9))
    ws = G.mapping(z)
    cols, rows = G.synthesis.lines(ws, torch.from_numpy(ys), torch.from_numpy(xs))
    return ws.numpy(), cols.numpy(), rows.numpy()


@torch.no_grad()
def torch_outputs(G, stage, feeds, cutoff=None):
    t = {k: torch.from_numpy(v) for k, v in feeds.items()}
    if stage == "mapping":
        return [G.mapping(t["z"], truncation_psi=float(feeds["psi"][0]), truncation_cutoff=cutoff)]
    if stage == "lines":
        return list(G.synthesis.lines(t["ws"], t["ys"], t["xs"]))
    if stage == "pixels":
        return [G.synthesis.pixels(t["ws"], t["cols"], t["rows"])]
    ws = G.mapping(t["z"], truncation_psi=float(feeds["psi"][0]), truncation_cutoff=cutoff)
    return [G.synthesis(ws, ys=t["ys"], xs=t["xs"])]


def feeds_for(G, stage, batch, height, width, psi=0.6):
    rng = np.random.RandomState(batch * 100 + height)
    z = rng.randn(batch, CONFIG.z_dim).astype(np.float32)
    ys, xs = grid.coords(width, height)
    ws, cols, rows = stages_inputs(G, batch, height, width)
    psi = np.array([psi], dtype=np.float32)
    return {"mapping": {"z": z, "psi": psi}, "lines": {"ws": ws, "ys": ys, "xs": xs},
            "pixels": {"ws": ws, "cols": cols, "rows": rows},
            "generator": {"z": z, "psi": psi, "ys": ys, "xs": xs}}[stage]


# Sizes other than the export example (19 x 23, batch 2): odd, non-square both ways, single lines.
SIZES = [(1, 7, 5), (3, 12, 31), (2, 1, 9), (1, 16, 1)]


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("batch,height,width", SIZES)
def test_onnxruntime_matches_pytorch_at_other_sizes(generator, bundle, stage, batch, height, width):
    session = ort.InferenceSession(str(read_bundle(bundle).graph_path(stage)), providers=["CPUExecutionProvider"])
    feeds = feeds_for(generator, stage, batch, height, width)
    for ours, ref in zip(session.run(None, feeds), torch_outputs(generator, stage, feeds), strict=True):
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref.numpy(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("batch,height,width", [(2, 5, 3), (1, 1, 4)])
def test_reference_evaluator_agrees(generator, bundle, stage, batch, height, width):
    """A second ONNX consumer: the graphs are standard ONNX, not an ONNX Runtime dialect."""
    path = str(read_bundle(bundle).graph_path(stage))
    feeds = feeds_for(generator, stage, batch, height, width)
    reference = ReferenceEvaluator(path).run(None, feeds)
    onnxruntime = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
    for ref_out, ort_out, torch_out in zip(reference, onnxruntime, torch_outputs(generator, stage, feeds)):
        np.testing.assert_allclose(ref_out, ort_out, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(ref_out, torch_out.numpy(), atol=1e-5, rtol=1e-5)


def test_truncation_in_the_mapping_graph(generator, bundle):
    session = ort.InferenceSession(str(read_bundle(bundle).graph_path("mapping")))
    z = np.random.RandomState(7).randn(3, CONFIG.z_dim).astype(np.float32)
    (untruncated,) = session.run(None, {"z": z, "psi": np.array([1.0], np.float32)})
    (average,) = session.run(None, {"z": z, "psi": np.array([0.0], np.float32)})
    (half,) = session.run(None, {"z": z, "psi": np.array([0.5], np.float32)})
    w_avg = generator.mapping.w_avg.numpy()
    np.testing.assert_allclose(untruncated, generator.mapping(torch.from_numpy(z)).numpy(), atol=1e-6)
    np.testing.assert_allclose(average, np.broadcast_to(w_avg, average.shape), atol=1e-6)
    np.testing.assert_allclose(half, (untruncated + w_avg) / 2, atol=1e-6)


@pytest.mark.parametrize("cutoff", [None, 1, 3, 100])
def test_mapping_stage_cutoff_matches_the_model(generator, cutoff):
    z = torch.randn(2, CONFIG.z_dim)
    psi = torch.tensor([0.3])
    ours = stages.MappingStage(generator, cutoff)(z, psi)
    ref = generator.mapping(z, truncation_psi=0.3, truncation_cutoff=cutoff)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("batch,height,width", [(1, 9, 14), (2, 17, 1)])
def test_folded_modulation_equals_the_model(generator, batch, height, width):
    ws, cols, rows = (torch.from_numpy(a) for a in stages_inputs(generator, batch, height, width))
    ys, xs = (torch.from_numpy(a) for a in grid.coords(width, height))
    pixels = stages.PixelsStage(generator)
    lines = stages.LinesStage(generator)
    ref_img, (ref_cols, ref_rows) = pixels(ws, cols, rows), lines(ws, ys, xs)
    with stages.modulation(pixels, "folded"), stages.modulation(lines, "folded"):
        img, (fold_cols, fold_rows) = pixels(ws, cols, rows), lines(ws, ys, xs)
    torch.testing.assert_close(img, ref_img, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fold_cols, ref_cols, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fold_rows, ref_rows, atol=1e-5, rtol=1e-5)
    # The context restores the model's own form.
    assert all("forward" not in vars(m) for m in generator.modules())
    with pytest.raises(ValueError, match="modulation form"), stages.modulation(pixels, "fused"):
        pass


def test_pixels_graph_tiles_like_the_whole_image(generator, bundle):
    session = ort.InferenceSession(str(read_bundle(bundle).graph_path("pixels")))
    ws, cols, rows = stages_inputs(generator, 2, 13, 10)
    (whole,) = session.run(None, {"ws": ws, "cols": cols, "rows": rows})
    tiled = np.zeros_like(whole)
    for y0 in range(0, 13, 5):
        for x0 in range(0, 10, 4):
            (tile,) = session.run(None, {"ws": ws, "cols": cols[:, :, :, y0:y0 + 5], "rows": rows[:, :, :, x0:x0 + 4]})
            tiled[:, :, y0:y0 + 5, x0:x0 + 4] = tile
    np.testing.assert_allclose(tiled, whole, atol=1e-5, rtol=0)


def test_activation_form_exports_and_matches(generator, tmp_path):
    """The form with constant weights (what INT8 needs) exports too, and matches the model."""
    model = graphs.export_stage(generator, "pixels", tmp_path / "pixels.onnx", 18, modulation="activation")
    assert "Einsum" not in {n.op_type for n in model.graph.node}
    feeds = feeds_for(generator, "pixels", 2, 6, 11)
    (img,) = ort.InferenceSession(str(tmp_path / "pixels.onnx")).run(None, feeds)
    np.testing.assert_allclose(img, torch_outputs(generator, "pixels", feeds)[0].numpy(), atol=1e-5, rtol=1e-5)
