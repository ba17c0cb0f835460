"""The work planner: every pixel and line covered exactly once, inside budgets and backend ranges."""

from __future__ import annotations

import numpy as np
import pytest

from creps.cli import parse_memory
from creps.runtime.tiling import (
    DEFAULT_LINES,
    DEFAULT_TILE,
    Limits,
    PlanError,
    line_feature_bytes,
    make_plan,
    split,
)

MODEL = {"num_blocks": 6, "biline_channels": 32, "rank": 8, "img_channels": 3, "channel_base": 65536,
         "channel_max": 1024}
SIZES = [(1, 1), (1, 300), (300, 1), (37, 21), (512, 512), (2048, 512), (130, 1000)]


def coverage(plan) -> np.ndarray:
    """How often each pixel is in a tile."""
    count = np.zeros((plan.height, plan.width), int)
    for band, column in plan.tiles():
        count[band, column] += 1
    return count


def line_coverage(plan) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.zeros(plan.height, int), np.zeros(plan.width, int)
    for chunk in plan.line_chunks:
        ys[chunk.ys] += not chunk.pad_ys
        xs[chunk.xs] += not chunk.pad_xs
    return ys, xs


@pytest.mark.parametrize("n,parts", [(1, 1), (10, 3), (512, 4), (7, 7), (1000, 9)])
def test_split_is_contiguous_and_near_equal(n, parts):
    slices = split(n, parts)
    assert slices[0].start == 0 and slices[-1].stop == n
    assert all(a.stop == b.start for a, b in zip(slices, slices[1:]))
    lengths = [s.stop - s.start for s in slices]
    assert max(lengths) - min(lengths) <= 1 and min(lengths) >= 1


@pytest.mark.parametrize("width,height", SIZES)
@pytest.mark.parametrize("tile", [None, (16, 16), (1, 7), (4096, 4096)])
def test_tiles_cover_every_pixel_once(width, height, tile):
    plan = make_plan(MODEL, width, height, tile=tile)
    assert (coverage(plan) == 1).all()
    tile_w, tile_h = tile or DEFAULT_TILE
    assert plan.tile[0] <= tile_w and plan.tile[1] <= tile_h
    ys, xs = line_coverage(plan)
    assert (ys == 1).all() and (xs == 1).all()


@pytest.mark.parametrize("width,height", SIZES)
@pytest.mark.parametrize("max_lines", [2, 7, 64, 10_000])
def test_line_chunks_respect_the_chunk_size(width, height, max_lines):
    plan = make_plan(MODEL, width, height, max_lines=max_lines)
    ys, xs = line_coverage(plan)
    assert (ys == 1).all() and (xs == 1).all()
    for chunk in plan.line_chunks:
        lines = (chunk.ys.stop - chunk.ys.start) + (chunk.xs.stop - chunk.xs.start)
        assert 2 <= lines <= max_lines
        assert chunk.ys.stop > chunk.ys.start and chunk.xs.stop > chunk.xs.start


@pytest.mark.parametrize("budget", ["256M", "64M", "40M", "33M"])
def test_memory_budget_shrinks_tiles_and_is_kept(budget):
    max_memory = parse_memory(budget)  # the line features of 2048x512 at batch 2 take 30 MiB
    plan = make_plan(MODEL, 2048, 512, batch=2, max_memory=max_memory)
    assert plan.estimated_bytes <= max_memory
    assert (coverage(plan) == 1).all()
    roomy = make_plan(MODEL, 2048, 512, batch=2)
    assert plan.tile[0] * plan.tile[1] <= roomy.tile[0] * roomy.tile[1]


def test_small_budget_gives_smaller_tiles_than_default():
    max_memory = parse_memory("17M")  # 15 MiB of line features leave 2 MiB of work
    plan = make_plan(MODEL, 2048, 512, max_memory=max_memory)
    assert plan.tile[0] * plan.tile[1] < DEFAULT_TILE[0] * DEFAULT_TILE[1]
    assert plan.estimated_bytes <= max_memory


def test_budget_below_the_line_features_is_refused():
    features = (8192 + 2048) * line_feature_bytes(MODEL)
    with pytest.raises(PlanError, match="memory budget"):
        make_plan(MODEL, 8192, 2048, max_memory=features)


def test_requested_tile_that_does_not_fit_the_budget_is_refused():
    with pytest.raises(PlanError, match="tile"):
        make_plan(MODEL, 2048, 512, tile=(512, 512), max_memory=parse_memory("32M"))


def test_backend_ranges_bound_tiles_chunks_and_batch():
    limits = Limits(batch=(1, 4), line_height=(1, 100), line_width=(1, 300), tile_height=(1, 40),
                    tile_width=(1, 50))
    plan = make_plan(MODEL, 1000, 333, batch=4, limits=limits)
    assert plan.tile[0] <= 50 and plan.tile[1] <= 40
    assert all(c.ys.stop - c.ys.start <= 100 and c.xs.stop - c.xs.start <= 300 for c in plan.line_chunks)
    assert (coverage(plan) == 1).all()
    with pytest.raises(PlanError, match="batch 5"):
        make_plan(MODEL, 100, 100, batch=5, limits=limits)


def near_equal_part(n, longest):
    """The longest of the fewest near-equal parts of n that are at most `longest`."""
    parts = -(-n // longest)
    return -(-n // parts)


@pytest.mark.parametrize("width,height", [(2048, 512), (1000, 333), (300, 97)])
def test_bounded_backend_defaults_to_its_profile_tile_and_chunk(width, height):
    # TensorRT engines are built for their profile's largest tile and chunk: use them, not the CPU's.
    limits = Limits(tile_height=(1, 256), tile_width=(1, 384), line_height=(1, 200), line_width=(1, 600))
    plan = make_plan(MODEL, width, height, limits=limits)
    assert plan.tile == (near_equal_part(width, 384), near_equal_part(height, 256))
    calls = [(c.ys.stop - c.ys.start, c.xs.stop - c.xs.start) for c in plan.line_chunks]
    assert len(calls) == max(-(-height // 200), -(-width // 600), -(-(width + height) // 800))
    assert all(h <= 200 and w <= 600 for h, w in calls)
    assert (coverage(plan) == 1).all()
    small = make_plan(MODEL, width, height, limits=limits, max_memory=parse_memory("24M"))
    assert small.tile[0] * small.tile[1] < plan.tile[0] * plan.tile[1]  # the budget still shrinks it
    assert (coverage(small) == 1).all()
    unbounded = make_plan(MODEL, width, height)
    assert unbounded.tile == (near_equal_part(width, DEFAULT_TILE[0]), near_equal_part(height, DEFAULT_TILE[1]))


def test_size_below_a_backend_minimum_is_refused():
    limits = Limits(tile_height=(8, 256), tile_width=(8, 256), line_height=(8, 1024), line_width=(8, 1024))
    with pytest.raises(PlanError, match="outside the backend's range"):
        make_plan(MODEL, 100, 4, limits=limits)
    assert (coverage(make_plan(MODEL, 100, 8, limits=limits)) == 1).all()


@pytest.mark.parametrize("text,value", [("512M", 512 << 20), ("2G", 2 << 30), ("1.5G", 3 << 29), ("65536", 65536),
                                        ("64k", 64 << 10), ("1GiB", 1 << 30), ("8MB", 8 << 20)])
def test_parse_memory(text, value):
    assert parse_memory(text) == value


@pytest.mark.parametrize("text", ["abc", "", "0", "-5M", "12Q", "nanM", "infG"])
def test_parse_memory_refuses_nonsense(text):
    with pytest.raises(ValueError):
        parse_memory(text)


@pytest.mark.parametrize("width,height", [(1, 300), (37, 21), (512, 512), (2048, 512), (3, 2)])
def test_work_is_split_for_concurrent_workers(width, height):
    plan = make_plan(MODEL, width, height, workers=2)
    calls = len(plan.line_chunks)
    assert calls % 2 == 0 or calls == max(width, height)
    assert len(plan.bands) * len(plan.columns) >= min(2, width * height)
    assert (coverage(plan) == 1).all()
    ys, xs = line_coverage(plan)
    assert (ys == 1).all() and (xs == 1).all()


def test_budget_is_shared_by_the_workers():
    max_memory = parse_memory("24M")
    one, two = (make_plan(MODEL, 2048, 512, max_memory=max_memory, workers=w) for w in (1, 2))
    assert one.estimated_bytes <= max_memory and two.estimated_bytes <= max_memory
    assert two.tile[0] * two.tile[1] < one.tile[0] * one.tile[1]


def test_given_tile_and_chunk_are_kept_for_workers():
    plan = make_plan(MODEL, 300, 200, tile=(300, 200), max_lines=500, workers=2)
    assert len(plan.line_chunks) == 1 and plan.tile == (300, 200) and len(plan.bands) * len(plan.columns) == 1


@pytest.mark.parametrize("batch", [2, 8, 64])
def test_default_tile_and_chunk_are_shared_by_the_batch(batch):
    # The defaults are the fastest per call: a batch of 8 in 8x larger calls ran slower and took 4x the memory.
    one, many = make_plan(MODEL, 512, 512), make_plan(MODEL, 512, 512, batch=batch)
    assert many.tile[0] * many.tile[1] * batch <= DEFAULT_TILE[0] * DEFAULT_TILE[1]
    assert many.tile[0] * many.tile[1] * batch >= DEFAULT_TILE[0] * DEFAULT_TILE[1] / 2  # not needlessly small
    lines = max((c.ys.stop - c.ys.start) + (c.xs.stop - c.xs.start) for c in many.line_chunks)
    assert lines * batch <= max(2 * batch, DEFAULT_LINES)
    features = (512 + 512) * line_feature_bytes(MODEL)
    assert many.estimated_bytes - batch * features <= one.estimated_bytes - features  # the same work per call
    assert (coverage(many) == 1).all()


def test_bounded_profile_tile_does_not_shrink_with_the_batch():
    limits = Limits(batch=(1, 8), tile_height=(1, 64), tile_width=(1, 64), line_height=(1, 100), line_width=(1, 100))
    assert make_plan(MODEL, 512, 512, batch=8, limits=limits).tile == make_plan(MODEL, 512, 512, limits=limits).tile
