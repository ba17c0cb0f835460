"""The tiny bundle the package ships (creps/data/tiny/) is what the exporter writes today from
tests/make_tiny_bundle.py's generator: the same manifest apart from what legitimately varies
(exporter versions, the bytes of a graph, the parity record), and the same outputs on ONNX
Runtime at an odd size and batch the export's own check does not use. When this fails, run
`python tests/make_tiny_bundle.py` and commit creps/data/tiny/."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import numpy as np
import pytest

from creps import grid
from creps.runtime.backends import OrtBackend
from creps.runtime.bundle import read_bundle
from creps.runtime.default import tiny_bundle

VARIES = ("exporter", "verification")  # versions of torch/onnx/onnxscript; errors measured at export
GRAPH_BYTES = ("sha256",)  # a newer exporter may write the same graph differently


def comparable(manifest: dict) -> dict:
    kept = {k: v for k, v in manifest.items() if k not in VARIES}
    kept["graphs"] = {key: {k: v for k, v in entry.items() if k not in GRAPH_BYTES}
                      for key, entry in manifest["graphs"].items()}
    return kept


def stage_outputs(bundle_dir: Path, width: int, height: int) -> dict[str, np.ndarray]:
    """mapping -> lines -> pixels on the CPU, batch 2, psi 0.6."""
    bundle = read_bundle(bundle_dir)
    backend = OrtBackend(bundle, concurrent=False)
    ys, xs = grid.coords(width, height)
    z = np.concatenate([grid.seed_to_z(seed, bundle.model["z_dim"]) for seed in (3, 8)])  # (2, z_dim)
    out = backend.run("mapping", {"z": z, "psi": np.array([0.6], np.float32)})
    out |= backend.run("lines", {"ws": out["ws"], "ys": ys, "xs": xs})
    return out | backend.run("pixels", {"ws": out["ws"], "cols": out["cols"], "rows": out["rows"]})


def test_shipped_bundle_is_what_the_exporter_writes(tmp_path):
    pytest.importorskip("torch", reason="exporting needs PyTorch")
    pytest.importorskip("onnxscript", reason="exporting needs onnxscript")
    from make_tiny_bundle import write

    fresh = write(tmp_path / "fresh", verify=False)
    shipped = read_bundle(tiny_bundle()).manifest
    assert comparable(shipped) == comparable(read_bundle(fresh).manifest)
    record = shipped["verification"]  # exported with the parity check creps-export runs
    assert record["max_abs_error"] <= record["tolerance"]
    want, got = stage_outputs(fresh, 37, 23), stage_outputs(tiny_bundle(), 37, 23)
    assert want.keys() == got.keys() == {"ws", "cols", "rows", "img"}
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_shipped_bundle_is_small_and_in_the_package_data():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
    files = sorted(p for p in tiny_bundle().iterdir())
    assert {p.suffix for p in files} == {".json", ".onnx"}
    assert sum(p.stat().st_size for p in files) < 600_000  # test data in every install: a few hundred KB
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["creps"]
    for path in files:
        name = f"data/tiny/{path.name}"
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), f"{name} is not installed"
