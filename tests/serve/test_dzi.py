"""creps-run --dzi: every tile of the pyramid on disk, the renderer's bytes, a DZI that parses;
bad input is one line, exit 1, nothing written; an interrupt leaves nothing behind."""

from __future__ import annotations

import io
import math
import signal
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from creps.cli import Interrupted
from creps.runtime import Runtime
from creps.runtime.cli import cli
from creps.runtime.default import tiny_bundle
from creps.serve import Canvas, TileKey, TileRenderer
from in_process import in_process
from signal_loop import Case, script, signal_loop
from without_packages import TORCH_SIDE, run_without

NS = "{http://schemas.microsoft.com/deepzoom/2008}"


def run(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    return in_process(monkeypatch, capsys, cli, "creps-run", "--bundle", tiny_bundle(), "--backend", "ort-cpu", *args)


@pytest.fixture(scope="module")
def runtime():
    with Runtime(tiny_bundle(), backend="ort-cpu") as runtime:
        yield runtime


def expected_files(side: int) -> set[str]:
    """Every tile of a side x side Deep Zoom pyramid, by the DZI rules: levels 0..ceil(log2 side),
    each the deepest halved (rounded up) per level, cut in 256-pixel tiles."""
    files, size, level = set(), side, math.ceil(math.log2(side))
    while level >= 0:
        count = math.ceil(size / 256)
        files |= {f"{level}/{col}_{row}.png" for col in range(count) for row in range(count)}
        size, level = math.ceil(size / 2), level - 1
    return files


@pytest.mark.parametrize("views", [3, 5])
def test_the_pyramid_is_every_tile_of_the_renderer(monkeypatch, capsys, runtime, tmp_path, views):
    out = tmp_path / "sub" / "pyr"
    code, stdout, err = run(monkeypatch, capsys, "--seeds", "6", "--trunc", "0.6", "--canvas-views", str(views),
                            "--cache-memory", "64M", "--dzi", out)
    assert code == 0, err
    assert sorted(p.name for p in out.parent.iterdir()) == ["pyr.dzi", "pyr_files"]
    side = views * 128  # tiny model: R = 32, step 1/128
    root = ET.parse(out.parent / "pyr.dzi").getroot()
    assert root.tag == f"{NS}Image"
    assert (root.get("TileSize"), root.get("Overlap"), root.get("Format")) == ("256", "1", "png")
    size = root.find(f"{NS}Size")
    assert (int(size.get("Width")), int(size.get("Height"))) == (side, side)
    files = out.parent / "pyr_files"
    written = {str(p.relative_to(files)) for p in files.rglob("*.png")}
    assert written == expected_files(side)
    assert f"{len(written)} tiles" in stdout
    renderer = TileRenderer(runtime, Canvas.of(runtime.model, views))
    levels = renderer.canvas.max_level
    for level, col, row in [(levels, 0, 0), (levels, 1, 1), (levels, views // 2, 0), (levels - 1, 0, 0), (0, 0, 0)]:
        tile = renderer.render(TileKey(6, 0.6, level, col, row))
        on_disk = (files / str(level) / f"{col}_{row}.png").read_bytes()
        assert on_disk == tile.png
        pixels = np.asarray(Image.open(io.BytesIO(on_disk)))
        np.testing.assert_array_equal(pixels, runtime.generate(6, size=tile.size, psi=0.6, window=tile.window)[0])


def test_a_trailing_dzi_is_dropped_and_an_old_pyramid_replaced(monkeypatch, capsys, tmp_path):
    (tmp_path / "pyr_files" / "99").mkdir(parents=True)  # a stale level of an earlier pyramid
    code, _, err = run(monkeypatch, capsys, "--canvas-views", "1", "--dzi", tmp_path / "pyr.dzi")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pyr.dzi", "pyr_files"]
    assert {str(p.relative_to(tmp_path / "pyr_files")) for p in (tmp_path / "pyr_files").rglob("*.png")} == \
        expected_files(128)


@pytest.mark.parametrize("args,message", [
    (["--seeds", "1,2"], "one seed's pyramid"),
    (["--size", "64x64"], "--size with --dzi"),
    (["--window", "0,0,1,1", "--fit", "stretch"], "--window, --fit with --dzi"),
    (["--batch", "2"], "--batch with --dzi"),
    (["--trunc", "nan"], "psi nan"),
    (["--trunc", "2.5"], "psi 2.5"),
    (["--canvas-views", "0"], "--canvas-views"),
    (["--detail", "0.5"], "--detail"),
    (["--cache-memory", "lots"], "--cache-memory"),
    (["--out", "x.png"], "exactly one of --out"),
])
def test_bad_input_is_one_line_and_writes_nothing(monkeypatch, capsys, tmp_path, args, message):
    code, _, err = run(monkeypatch, capsys, *args, "--dzi", tmp_path / "out" / "pyr")
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["--canvas-views", "4"], ["--detail", "2"], ["--cache-memory", "1G"]])
def test_pyramid_options_with_out_are_refused(monkeypatch, capsys, tmp_path, args):
    code, _, err = run(monkeypatch, capsys, *args, "--out", tmp_path / "x.png")
    assert code == 1 and f"{args[0]} with --out" in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_neither_output_is_refused(monkeypatch, capsys, tmp_path):
    code, _, err = in_process(monkeypatch, capsys, cli, "creps-run", "--bundle", tiny_bundle())
    assert code == 1 and "exactly one of --out" in err and err.count("\n") == 1


@pytest.mark.parametrize("target", ["file/pyr", "folder/", "clash"])
def test_unwritable_targets_are_refused(monkeypatch, capsys, tmp_path, target):
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "clash_files").write_text("a file where the tiles go")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run(monkeypatch, capsys, "--dzi", f"{tmp_path}/{target}")
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: --dzi"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("failure", [Interrupted(signal.SIGTERM), RuntimeError])
def test_a_failure_midway_leaves_nothing(monkeypatch, capsys, tmp_path, failure):
    """The fifth tile raises (an interrupt, as run_command's handler raises it; or an error): no
    descriptor, no tile folder, no temporaries."""
    render, calls = TileRenderer.render, []

    def failing(self, key):
        calls.append(key)
        if len(calls) == 5:
            raise failure if isinstance(failure, BaseException) else failure("the backend broke")
        return render(self, key)

    monkeypatch.setattr(TileRenderer, "render", failing)
    if isinstance(failure, BaseException):
        code, _, err = run(monkeypatch, capsys, "--canvas-views", "3", "--dzi", tmp_path / "pyr")
        assert code == 128 + signal.SIGTERM and "interrupted" in err
    else:
        with pytest.raises(RuntimeError, match="broke"):  # a bug, not a user error: its traceback
            run(monkeypatch, capsys, "--canvas-views", "3", "--dzi", tmp_path / "pyr")
    assert len(calls) == 5
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_real_signals_leave_nothing_half_done(tmp_path):
    """SIGINT (to the process group) and SIGTERM at seeded random moments of a real creps-run
    --dzi: exit 130 / 143 and `interrupted`, or a complete pyramid; never a temporary. A signal
    that lands where Python drops exceptions (a weakref callback, a __del__: creps.cli
    quiet_unraisables) stops nothing: that run exits as interrupted with the complete pyramid
    (seen once in a clean-clone CI run)."""
    case = Case("creps-run --dzi", script("creps.runtime.cli"),
                lambda f: ["--bundle", tiny_bundle(), "--backend", "ort-cpu", "--canvas-views", "8", "--dzi",
                           f / "new" / "pyr"])
    outcomes = signal_loop(case, tmp_path, runs=4, seed=14)
    assert not any(o.problems for o in outcomes), [(o.signum, o.delay, o.code, o.problems) for o in outcomes]
    assert any(o.interrupted for o in outcomes), "no run was interrupted: the delays are too long for this machine"
    for outcome, folder in zip(outcomes, [tmp_path / "baseline", *(tmp_path / f"run{i:03d}" for i in range(4))]):
        left = sorted(p.name for p in (folder / "new").iterdir()) if (folder / "new").exists() else []
        complete = ["pyr.dzi", "pyr_files"]
        assert left in ([[], complete] if outcome.interrupted else [complete]), (outcome, left)


def test_dzi_never_imports_torch(runtime, tmp_path):
    """creps-run --dzi where the PyTorch side cannot be imported: it never looks for it, and
    writes the renderer's tiles."""
    done, tried = run_without(TORCH_SIDE, "creps.runtime.cli:main", "--bundle", tiny_bundle(), "--backend",
                              "ort-cpu", "--seeds", "2", "--canvas-views", "1", "--dzi", tmp_path / "pyr",
                              tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert tried == []
    tile = TileRenderer(runtime, Canvas.of(runtime.model, 1)).render(TileKey(2, 1.0, 7, 0, 0))
    assert (tmp_path / "pyr_files" / "7" / "0_0.png").read_bytes() == tile.png
