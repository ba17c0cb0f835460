"""TileRenderer on the shipped tiny bundle: each tile is Runtime.generate of its window bit for
bit (and creps-run's), a level's tiles stitch into the whole level, k x k tiles cost 2k line
evaluations (counted at the backend), the same tile in flight renders once, bad keys are
404/400 classes before any work."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from creps.errors import NonFiniteError
from creps.runtime import Runtime
from creps.runtime.backends import Backend, OrtBackend
from creps.runtime.bundle import read_bundle
from creps.runtime.cli import cli
from creps.runtime.default import tiny_bundle
from creps.serve import BadTileRequest, Canvas, TileKey, TileNotFound, TileRenderer, window_header
from creps.serve.tiles import MAX_SEED
from in_process import in_process


class CountingBackend(Backend):
    """ONNX Runtime on the CPU, recording every call: (stage, ys and xs lengths); `hold` makes
    the pixels calls wait until it is set."""

    def __init__(self, hold: threading.Event | None = None):
        self.inner = OrtBackend(read_bundle(tiny_bundle()))
        self.name, self.precision = self.inner.name, self.inner.precision
        self.calls: list[tuple] = []
        self.lock = threading.Lock()
        self.hold = hold
        self.failures: dict[str, int] = {}  # stage -> how many of its next calls raise

    def run(self, stage, feeds):
        with self.lock:
            self.calls.append((stage, len(feeds["ys"]), len(feeds["xs"])) if stage == "lines" else (stage,))
            failing = self.failures.get(stage, 0) > 0
            if failing:
                self.failures[stage] -= 1
        if failing:
            raise RuntimeError(f"{stage} failed")
        if stage == "pixels" and self.hold is not None:
            assert self.hold.wait(10)
        return self.inner.run(stage, feeds)

    def shape_range(self, stage, input):
        return self.inner.shape_range(stage, input)

    def parallel(self, stage):
        return self.inner.parallel(stage)

    def close(self):
        self.inner.close()

    def stage_calls(self, stage: str) -> list[tuple]:
        with self.lock:
            return [call for call in self.calls if call[0] == stage]


@pytest.fixture(scope="module")
def runtime():
    with Runtime(tiny_bundle(), backend="ort-cpu") as runtime:
        yield runtime


def decoded(tile) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(tile.png)).convert("RGB"))


# tiny model, R = 32: step 1/128. 16 views: 2048 px, levels 0..11. 5 views: 640 px, levels 0..10,
# 640 = 256 + 256 + 128: the last column and row are 129 px; level 3 is 5 px.
@pytest.mark.parametrize("views,level,col,row,size", [
    (16, 11, 3, 2, (258, 258)),   # deepest level, inside
    (16, 11, 0, 7, (257, 257)),   # first column, last row
    (5, 10, 2, 0, (129, 257)),    # the far edge: non-square, odd
    (5, 10, 2, 2, (129, 129)),
    (5, 9, 1, 0, (65, 257)),      # 320 px level: 256 + 64
    (5, 3, 0, 0, (5, 5)),         # 5 px level
    (16, 1, 0, 0, (2, 2)),
    (16, 0, 0, 0, (1, 1)),
])
def test_a_tile_is_runtime_generate_of_its_window(runtime, views, level, col, row, size):
    renderer = TileRenderer(runtime, Canvas.of(runtime.model, views))
    key = TileKey(11, 0.7, level, col, row)
    tile = renderer.render(key)
    assert tile.size == size and tile.key == key
    want = runtime.generate(11, size=size, psi=0.7, window=tile.window)[0]
    np.testing.assert_array_equal(decoded(tile), want)
    assert tile.etag == renderer.etag(key)


def test_a_tile_is_creps_runs_image_of_its_window_header(runtime, monkeypatch, capsys, tmp_path):
    renderer = TileRenderer(runtime, Canvas.of(runtime.model, 5))
    tile = renderer.render(TileKey(4, -0.5, 10, 2, 1))
    width, height = tile.size
    out = tmp_path / "tile.png"
    code, _, err = in_process(monkeypatch, capsys, cli, "creps-run", "--bundle", tiny_bundle(), "--backend",
                              "ort-cpu", "--seeds", "4", "--trunc", "-0.5", "--window", window_header(tile.window),
                              "--size", f"{width}x{height}", "--out", out)
    assert code == 0, err
    np.testing.assert_array_equal(decoded(tile), np.asarray(Image.open(out)))


@pytest.mark.parametrize("views,level", [(5, 10), (5, 9), (3, 9)])
def test_a_levels_tiles_stitch_into_the_whole_level(runtime, views, level):
    """Every tile placed at its level pixels: overlaps agree, and the mosaic is one
    Runtime.generate of the whole level's window (no seam, no repeated column)."""
    canvas = Canvas.of(runtime.model, views)
    renderer = TileRenderer(runtime, canvas)
    width, height = canvas.level_size(level)
    mosaic = np.zeros((height, width, 3), np.uint8)
    filled = np.zeros((height, width), bool)
    cols, rows = canvas.tile_counts(level)
    for row in range(rows):
        for col in range(cols):
            columns, lines = canvas.tile_pixels(level, col, row)
            pixels = decoded(renderer.render(TileKey(2, 1.0, level, col, row)))
            region = (slice(lines.start, lines.stop), slice(columns.start, columns.stop))
            np.testing.assert_array_equal(pixels[filled[region]], mosaic[region][filled[region]])  # the overlap
            mosaic[region], filled[region] = pixels, True
    assert filled.all()
    first, _ = canvas.window(level, 0, 0)
    last, _ = canvas.window(level, cols - 1, rows - 1)
    whole = (first.x0, first.y0, last.x1, last.y1)
    np.testing.assert_array_equal(mosaic, runtime.generate(2, size=(width, height), psi=1.0, window=whole)[0])


def test_k_by_k_tiles_cost_2k_line_evaluations():
    backend = CountingBackend()
    with Runtime(tiny_bundle(), backend=backend, line_chunk=4096) as runtime:  # one lines call per tile side
        canvas = Canvas.of(runtime.model)
        renderer = TileRenderer(runtime, canvas)
        k, level = 3, canvas.max_level
        block = [TileKey(5, 0.8, level, 2 + col, 4 + row) for row in range(k) for col in range(k)]
        tiles = [renderer.render(key) for key in block]
        lines = backend.stage_calls("lines")
        assert len(lines) == 2 * k
        # k calls of a tile row's ys (258 lines, 1 xs filling the call), k of a column's xs
        assert sorted(lines) == sorted([("lines", 258, 1)] * k + [("lines", 1, 258)] * k)
        assert len(backend.stage_calls("mapping")) == 1
        for key in block:  # again: all lines cached
            renderer.render(key)
        assert len(backend.stage_calls("lines")) == 2 * k and len(backend.stage_calls("mapping")) == 1
        renderer.render(TileKey(5, 0.8, level, 2 + k, 4))  # one more column: its xs only
        assert len(backend.stage_calls("lines")) == 2 * k + 1
        renderer.render(TileKey(5, 0.6, level, 2, 4))  # another psi: its own ws and lines
        assert len(backend.stage_calls("lines")) == 2 * k + 3 and len(backend.stage_calls("mapping")) == 2
        want = runtime.generate(5, size=tiles[4].size, psi=0.8, window=tiles[4].window)[0]
        np.testing.assert_array_equal(decoded(tiles[4]), want)


def test_tiles_of_one_row_at_once_share_its_ys():
    backend = CountingBackend()
    with Runtime(tiny_bundle(), backend=backend, line_chunk=4096) as runtime:
        renderer = TileRenderer(runtime, Canvas.of(runtime.model))
        keys = [TileKey(6, 1.0, 11, col, 2) for col in range(1, 5)]
        barrier = threading.Barrier(len(keys))
        tiles = {}

        def render(key):
            barrier.wait()
            tiles[key] = renderer.render(key)

        threads = [threading.Thread(target=render, args=(key,)) for key in keys]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(backend.stage_calls("lines")) == sorted([("lines", 258, 1)] + [("lines", 1, 258)] * 4)
        assert len(backend.stage_calls("mapping")) == 1
        for key, tile in tiles.items():
            want = runtime.generate(6, size=tile.size, psi=1.0, window=tile.window)[0]
            np.testing.assert_array_equal(decoded(tile), want)


def test_lines_evicted_from_a_small_cache_are_computed_again():
    backend = CountingBackend()
    with Runtime(tiny_bundle(), backend=backend, line_chunk=4096) as runtime:
        canvas = Canvas.of(runtime.model)
        one_side = 258 * 4 * runtime.model["num_blocks"] * runtime.model["biline_channels"] * runtime.model["rank"]
        renderer = TileRenderer(runtime, canvas, cache_bytes=3 * one_side)  # a row's ys and two columns' xs
        row = [TileKey(1, 1.0, canvas.max_level, col, 3) for col in (1, 2, 3)]
        for key in row + row:
            renderer.render(key)
        # ys once; xs 1, 2, 3, then 1 again (evicting 2), 2 (evicting 3), 3
        assert len(backend.stage_calls("lines")) == 1 + 3 + 3
        assert renderer.stats()["bytes"] <= 3 * one_side and renderer.stats()["evictions"] >= 3


def test_the_same_tile_in_flight_renders_once():
    hold = threading.Event()
    backend = CountingBackend(hold)
    with Runtime(tiny_bundle(), backend=backend) as runtime:
        renderer = TileRenderer(runtime, Canvas.of(runtime.model))
        key = TileKey(9, 0.5, 11, 4, 4)
        tiles, threads = [], [threading.Thread(target=lambda: tiles.append(renderer.render(key))) for _ in range(6)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while renderer.stats()["tiles_coalesced"] < 5:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        hold.set()
        for thread in threads:
            thread.join(10)
        assert len(tiles) == 6 and all(tile is tiles[0] for tile in tiles)
        assert renderer.stats()["tiles_rendered"] == 1
        pixel_tiles = len(list(runtime.plan(tiles[0].size).tiles()))
        assert len(backend.stage_calls("pixels")) == pixel_tiles and len(backend.stage_calls("lines")) == 4


@pytest.mark.parametrize("stage", ["lines", "pixels", "mapping"])
def test_a_failed_render_is_not_kept(stage):
    backend = CountingBackend()
    with Runtime(tiny_bundle(), backend=backend, line_chunk=4096) as runtime:
        renderer = TileRenderer(runtime, Canvas.of(runtime.model, 3))
        key = TileKey(8, 0.9, 9, 0, 1)
        backend.failures[stage] = 1
        with pytest.raises(RuntimeError, match=f"{stage} failed"):
            renderer.render(key)
        tile = renderer.render(key)  # computed again, not the failure
        want = runtime.generate(8, size=tile.size, psi=0.9, window=tile.window)[0]
        np.testing.assert_array_equal(decoded(tile), want)
        assert renderer.stats()["tiles_rendered"] == 1


def test_a_tile_with_nan_is_refused(monkeypatch):
    backend = CountingBackend()
    run = backend.run

    def poisoned(stage, feeds):
        out = run(stage, feeds)
        return {"img": np.full_like(out["img"], np.nan)} if stage == "pixels" else out

    monkeypatch.setattr(backend, "run", poisoned)
    with Runtime(tiny_bundle(), backend=backend) as runtime:
        renderer = TileRenderer(runtime, Canvas.of(runtime.model, 3))
        with pytest.raises(NonFiniteError, match="seed 8 .*level 9, tile 0_1"):
            renderer.render(TileKey(8, 0.9, 9, 0, 1))
        assert renderer.stats()["tiles_rendered"] == 0


@pytest.mark.parametrize("key,error,match", [
    (TileKey(0, 1.0, 12, 0, 0), TileNotFound, "level 12"),
    (TileKey(0, 1.0, -1, 0, 0), TileNotFound, "level -1"),
    (TileKey(0, 1.0, 10**12, 0, 0), TileNotFound, "level"),
    (TileKey(0, 1.0, 11, 8, 0), TileNotFound, "tile 8_0"),
    (TileKey(0, 1.0, 11, 0, 8), TileNotFound, "tile 0_8"),
    (TileKey(0, 1.0, 11, -1, 0), TileNotFound, "tile -1_0"),
    (TileKey(0, 1.0, 0, 0, 1), TileNotFound, "tile 0_1"),
    (TileKey(0, 1.0, 5, 2**63, 0), TileNotFound, "tile"),
    (TileKey(0, 1.0, 5, 0, -(2**40)), TileNotFound, "tile"),
    (TileKey(-1, 1.0, 0, 0, 0), BadTileRequest, "seed -1"),
    (TileKey(MAX_SEED + 1, 1.0, 0, 0, 0), BadTileRequest, "seed"),
    (TileKey(1.5, 1.0, 0, 0, 0), BadTileRequest, "seed"),
    (TileKey(True, 1.0, 0, 0, 0), BadTileRequest, "seed"),
    (TileKey(0, float("nan"), 0, 0, 0), BadTileRequest, "psi nan"),
    (TileKey(0, float("inf"), 0, 0, 0), BadTileRequest, "psi inf"),
    (TileKey(0, 2.5, 0, 0, 0), BadTileRequest, "psi 2.5"),
    (TileKey(0, -2.01, 0, 0, 0), BadTileRequest, "psi"),
    (TileKey(0, "0.7", 0, 0, 0), BadTileRequest, "psi"),
    (TileKey(0, True, 0, 0, 0), BadTileRequest, "psi"),
])
def test_bad_keys_are_refused_before_any_work(key, error, match):
    backend = CountingBackend()
    with Runtime(tiny_bundle(), backend=backend) as runtime:
        renderer = TileRenderer(runtime, Canvas.of(runtime.model))  # 2048 px: levels 0..11, 8x8 tiles at 11
        with pytest.raises(error, match=match):
            renderer.check(key)
        with pytest.raises(error, match=match):
            renderer.render(key)
        assert backend.calls == []


def test_edge_keys_are_accepted(runtime):
    renderer = TileRenderer(runtime, Canvas.of(runtime.model, 3))
    for key in (TileKey(0, -2.0, 0, 0, 0), TileKey(MAX_SEED, 2.0, 9, 1, 1), TileKey(np.uint32(7), np.float32(0.5), 1,
                                                                                            0, 0)):
        renderer.check(key)
    assert renderer.render(TileKey(MAX_SEED, 2.0, 9, 1, 1)).size == (129, 129)  # 384 px: 256 + 128


def test_etags_name_the_tile_and_what_it_is_rendered_with(runtime):
    renderer = TileRenderer(runtime, Canvas.of(runtime.model))
    key = TileKey(3, 0.7, 11, 1, 2)
    etag = renderer.etag(key)
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 18
    assert TileRenderer(runtime, Canvas.of(runtime.model)).etag(key) == etag  # stable
    others = [TileKey(4, 0.7, 11, 1, 2), TileKey(3, 0.75, 11, 1, 2), TileKey(3, 0.7, 10, 1, 2),
              TileKey(3, 0.7, 11, 2, 1), TileKey(3, 0.7, 11, 1, 3)]
    assert len({etag, *map(renderer.etag, others)}) == 6
    assert renderer.etag(TileKey(np.int64(3), np.float64(0.7), np.int32(11), 1, 2)) == etag  # numpy scalars
    assert renderer.etag(TileKey(3, 0.0, 11, 1, 2)) == renderer.etag(TileKey(3, -0.0, 11, 1, 2))
    assert TileRenderer(runtime, Canvas.of(runtime.model, 15)).etag(key) != etag  # another canvas
    assert TileRenderer(runtime, Canvas.of(runtime.model, 16, 8)).etag(key) != etag
    assert renderer.stats()["tiles_rendered"] == 0  # no rendering for any of it


def test_descriptor_and_a_mismatched_canvas(runtime):
    canvas = Canvas.of(runtime.model, 4)
    assert TileRenderer(runtime, canvas).descriptor() == canvas.descriptor()
    with pytest.raises(Exception, match="64-pixel model"):
        TileRenderer(runtime, Canvas(64))
