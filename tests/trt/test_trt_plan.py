"""The TensorRT build plan without TensorRT: profiles cover every call the runtime makes."""

import pytest

from creps.export.trt_plan import BuildPlanError, build_plan, io_bytes, profiles
from creps.runtime.tiling import make_plan

PUBLISHED = dict(z_dim=512, w_dim=512, num_ws=15, num_blocks=6, rank=8, biline_channels=32, img_resolution=256,
                 img_channels=3, channel_base=65536, channel_max=1024)
GRAPHS = {k: {} for k in ("mapping", "lines", "pixels", "lines.fp16", "pixels.fp16")}


def manifest(graphs=GRAPHS):
    return {"model": PUBLISHED, "graphs": graphs}


def within(shape, shape_range):
    return all(lo <= d <= hi for d, lo, hi in zip(shape, shape_range.min, shape_range.max))


@pytest.mark.parametrize("sizes, tile, budget", [
    ([(2048, 512)], (512, 512), 3 << 30),
    ([(512, 512), (1000, 333)], (256, 128), None),
    ([(77, 1999)], None, 1 << 30),
])
def test_profiles_cover_every_line_chunk_and_tile(sizes, tile, budget):
    batch = 2
    plans = [make_plan(PUBLISHED, w, h, batch, tile, budget, 700) for w, h in sizes]
    prof = profiles(PUBLISHED, plans, batch)
    B, C, R = 6, 32, 8
    for plan in plans:
        for chunk in plan.line_chunks:
            assert within((chunk.ys.stop - chunk.ys.start,), prof["lines"]["ys"])
            assert within((chunk.xs.stop - chunk.xs.start,), prof["lines"]["xs"])
        for rows, cols in plan.tiles():
            assert within((batch, B, C, rows.stop - rows.start, R), prof["pixels"]["cols"])
            assert within((batch, B, C, cols.stop - cols.start, R), prof["pixels"]["rows"])
    for stage in prof.values():
        for r in stage.values():
            assert all(lo <= opt <= hi for lo, opt, hi in zip(r.min, r.opt, r.max))
    # The largest tile is the optimum (near-equal parts: almost every call has it).
    assert prof["pixels"]["cols"].opt[3] == max(p.tile[1] for p in plans)
    assert prof["pixels"]["rows"].opt[3] == max(p.tile[0] for p in plans)
    assert prof["mapping"]["z"].max == (batch, 512) and prof["lines"]["ws"].max == (batch, 15, 512)


def test_io_bytes_by_hand():
    plan = make_plan(PUBLISHED, 300, 200, 1, (100, 50), None, 400)
    prof = profiles(PUBLISHED, [plan], 1)
    # pixels: ws 15*512, cols 6*32*50*8, rows 6*32*100*8, img 3*50*100, float32
    want = 4 * (15 * 512 + 6 * 32 * 50 * 8 + 6 * 32 * 100 * 8 + 3 * 50 * 100)
    assert io_bytes(PUBLISHED, "pixels", prof["pixels"]) == want
    # lines: ws, ys h, xs w (the longest line chunk: 100 + 150 lines), cols 6*32*h*8, rows 6*32*w*8
    h = max(c.ys.stop - c.ys.start for c in plan.line_chunks)
    w = max(c.xs.stop - c.xs.start for c in plan.line_chunks)
    assert (h, w) == (100, 150)
    want = 4 * (15 * 512 + h + w + 6 * 32 * h * 8 + 6 * 32 * w * 8)
    assert io_bytes(PUBLISHED, "lines", prof["lines"]) == want


def test_fixed_axes_are_fixed_and_every_dynamic_axis_starts_at_1():
    plan = make_plan(PUBLISHED, 300, 200, 3, (100, 50), None, 400)
    prof = profiles(PUBLISHED, [plan], 3)
    assert list(prof) == ["mapping", "lines", "pixels"]
    assert list(prof["pixels"]) == ["ws", "cols", "rows"]  # the call order
    assert prof["mapping"]["psi"].to_dict() == {"min": [1], "opt": [1], "max": [1]}
    assert prof["mapping"]["z"].to_dict() == {"min": [1, 512], "opt": [3, 512], "max": [3, 512]}
    assert prof["lines"]["ws"].to_dict() == {"min": [1, 15, 512], "opt": [3, 15, 512], "max": [3, 15, 512]}
    assert prof["pixels"]["rows"].to_dict() == {"min": [1, 6, 32, 1, 8], "opt": [3, 6, 32, 100, 8],
                                                "max": [3, 6, 32, 100, 8]}


def test_dry_run_for_a_panorama_on_a_jetson_budget():
    plan = build_plan(manifest(), "fp16", [(2048, 512)], 1, 3 << 30)
    graphs = {b.stage: (b.graph, b.precision) for b in plan.stages}
    assert graphs == {"mapping": ("mapping", "fp32"), "lines": ("lines.fp16", "fp16"),
                      "pixels": ("pixels.fp16", "fp16")}
    text = "\n".join(plan.describe())
    assert "2048x512" in text and "3072 MiB" in text and "strongly typed" in text
    assert "cols: min [1, 6, 32, 1, 8] opt [1, 6, 32, 512, 8] max [1, 6, 32, 512, 8]" in text
    pixels = plan.stages[2]
    # Activations of one 512x512 tile: the runtime's per-pixel estimate at 2 bytes per value.
    assert pixels.activation_bytes == 512 * 512 * 4 * (6 * 32 + 3 * 4 * 32 + 2 * 3) // 2
    assert plan.to_dict()["stages"]["pixels"]["profile"]["rows"]["max"] == [1, 6, 32, 512, 8]


def test_budget_shrinks_the_tiles():
    roomy = build_plan(manifest(), "fp16", [(2048, 512)], 1, None)
    tight = build_plan(manifest(), "fp16", [(2048, 512)], 1, 64 << 20)
    assert tight.stages[2].profile["cols"].max[3] * tight.stages[2].profile["rows"].max[3] < \
        roomy.stages[2].profile["cols"].max[3] * roomy.stages[2].profile["rows"].max[3]
    assert tight.stages[2].activation_bytes < 64 << 20


def test_missing_precision_graphs_are_named():
    with pytest.raises(BuildPlanError, match=r"no lines.int8 graph.*creps-calib --int8"):
        build_plan(manifest(), "int8")
    with pytest.raises(BuildPlanError, match="precision"):
        build_plan(manifest(), "fp8")
