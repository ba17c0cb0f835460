"""NaN or Inf from a bundle's graphs is refused, naming the image and the tile, and no image file is written."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from creps import grid
from creps.errors import NonFiniteError
from creps.runtime import Runtime
from creps.runtime.backends import Backend, OrtBackend
from creps.runtime.bundle import read_bundle
from creps.runtime.cli import main

SIZE, TILE, ROW = (48, 32), (16, 8), 20  # row 20 lies in the third band, rows 16-23


class PoisonedLines(Backend):
    """ONNX Runtime (one call at a time), with NaN written into one seed's column features at one row (as
    one overflow in the lines graph would make): only that row of that image comes out non-finite."""

    name = "poisoned"

    def __init__(self, bundle, seed: int, row: int):
        self.inner = OrtBackend(read_bundle(bundle), concurrent=False)
        self.z = grid.seed_to_z(seed, 32)[0]
        self.y = grid.coords(*SIZE)[0][row]  # the row's coordinate, as the runtime computes it
        self.image = None  # the seed's index in the batch being run

    def run(self, stage, feeds):
        out = self.inner.run(stage, feeds)
        if stage == "mapping":
            found = np.flatnonzero((feeds["z"] == self.z).all(axis=1))
            self.image = found[0] if len(found) else None
        hit = np.flatnonzero(feeds["ys"] == self.y) if stage == "lines" and self.image is not None else []
        if len(hit):
            out = {**out, "cols": out["cols"].copy()}
            out["cols"][self.image][:, :, hit] = np.nan  # (B, 32, h, R) of that image
        return out

    def shape_range(self, stage, input):
        return None

    def parallel(self, stage):
        return 1


@pytest.fixture
def poisoned(tiny_bundle):
    return Runtime(tiny_bundle, backend=PoisonedLines(tiny_bundle, seed=4, row=ROW), tile=TILE)


def test_generate_names_the_image_and_the_tile(poisoned):
    with pytest.raises(NonFiniteError, match=r"^seed 4: the pixels graph gave NaN or Inf in the tile x 0-15, y 16-23;"):
        poisoned.generate([3, 4], SIZE, batch=2)
    with pytest.raises(NonFiniteError, match=r"^image 1: .* tile x 0-15, y 16-23;"):
        poisoned.generate(z=poisoned.z([3, 4]), size=SIZE, batch=2)


def test_save_writes_no_file_of_a_refused_image(poisoned, tiny_bundle, tmp_path):
    with pytest.raises(NonFiniteError, match="seed 4"):
        poisoned.save([tmp_path / "a.png", tmp_path / "b.png"], [3, 4], SIZE, batch=2)
    assert list(tmp_path.iterdir()) == []  # two bands of b.png were streamed: its temporary is gone too
    with pytest.raises(NonFiniteError, match="seed 4"):
        poisoned.save([tmp_path / "a.png", tmp_path / "b.png"], [3, 4], SIZE, batch=1)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # seed 3 was finished, whole, before seed 4
    want = Runtime(tiny_bundle, backend="ort-cpu").generate(3, SIZE)[0]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), want)


@pytest.fixture(scope="module")
def nan_bundle(tiny_generator, tmp_path_factory):
    """The tiny model with every weight NaN, exported without verification (which would refuse it)."""
    import copy

    import torch

    from creps.export import export_bundle

    G = copy.deepcopy(tiny_generator)
    with torch.no_grad():
        for tensor in G.state_dict().values():
            tensor.fill_(float("nan"))
    return export_bundle(G, tmp_path_factory.mktemp("nan") / "nan", verify=False)


def test_creps_run_refuses_a_nan_bundle_in_one_line(nan_bundle, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out" / "a.png"
    monkeypatch.setattr(sys, "argv", ["creps-run", "--bundle", str(nan_bundle), "--size", "24x24", "--tile", "8x8",
                                      "--out", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in err and err.count("error") == 1, err
    last = err.strip().replace("\r", "\n").splitlines()[-1]  # after the progress bar
    assert last.startswith("error: seed 0: the pixels graph gave NaN or Inf in the tile x 0-7, y 0-7;"), err
    assert not out.exists() and [p for p in tmp_path.rglob("*") if p.is_file()] == []
