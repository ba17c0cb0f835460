"""creps-run: images on disk equal the runtime's; every bad input is one line, exit 1, no file."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from creps.runtime import Runtime
from creps.runtime import default as default_model
from creps.runtime.backends import OrtBackend
from creps.runtime.cli import cli, main
from in_process import in_process


def run(monkeypatch, capsys, *args) -> tuple[int, str]:
    """Run creps-run in this process: (exit code, stderr)."""
    code, _, err = in_process(monkeypatch, capsys, cli, "creps-run", *args)
    return code, err


@pytest.fixture
def runtime(tiny_bundle):
    return Runtime(tiny_bundle, backend="ort-cpu")


def test_one_seed_writes_the_runtimes_image(monkeypatch, capsys, tiny_bundle, runtime, tmp_path):
    out = tmp_path / "pano.png"
    code, err = run(monkeypatch, capsys, "--bundle", tiny_bundle, "--size", "48x20", "--seeds", "5", "--trunc",
                    "0.7", "--tile", "16x8", "--out", out)
    assert code == 0, err
    want = runtime.generate(5, (48, 20), 0.7)[0]
    np.testing.assert_array_equal(np.asarray(Image.open(out)), want)
    assert [p.name for p in tmp_path.iterdir()] == ["pano.png"]


def test_several_seeds_fill_a_folder(monkeypatch, capsys, tiny_bundle, runtime, tmp_path):
    out = tmp_path / "faces"
    code, err = run(monkeypatch, capsys, "--bundle", tiny_bundle, "--size", "30x30", "--seeds", "1,3-4",
                    "--batch", "2", "--window", "0,0,0.5,0.5", "--max-memory", "1M", "--out", out)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["seed0001.png", "seed0003.png", "seed0004.png"]
    from creps.grid import Window

    want = runtime.generate([1, 3, 4], (30, 30), 1.0, Window(0, 0, 0.5, 0.5))
    for seed, image in zip([1, 3, 4], want):
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"seed{seed:04d}.png")), image)


def test_one_seed_into_an_existing_folder(monkeypatch, capsys, tiny_bundle, tmp_path):
    code, err = run(monkeypatch, capsys, "--bundle", tiny_bundle, "--seeds", "12", "--out", tmp_path)
    assert code == 0, err
    assert Image.open(tmp_path / "seed0012.png").size == (32, 32)  # the training resolution


def test_help_has_examples(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["creps-run", "--help"])
    main()
    text = capsys.readouterr().out
    assert "creps-run --size 2048x512 --out pano.png" in text and "--max-memory" in text


def broken_bundle(tiny_bundle, tmp_path, how: str):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    if how == "corrupt":
        (bundle / "manifest.json").write_text("{not json")
    elif how == "version":
        manifest["format_version"] = 99
        (bundle / "manifest.json").write_text(json.dumps(manifest))
    elif how == "hash":
        (bundle / "lines.onnx").write_bytes((bundle / "lines.onnx").read_bytes() + b"\0")
    elif how == "missing-graph":
        (bundle / "mapping.onnx").unlink()
    return bundle


BAD = [
    ("missing bundle", lambda b, t: ["--bundle", t / "nope"], "no such bundle"),
    ("corrupt manifest", lambda b, t: ["--bundle", broken_bundle(b, t, "corrupt")], "unreadable manifest"),
    ("format version", lambda b, t: ["--bundle", broken_bundle(b, t, "version")], "format version 99"),
    ("hash mismatch", lambda b, t: ["--bundle", broken_bundle(b, t, "hash")], "sha256"),
    ("graph missing", lambda b, t: ["--bundle", broken_bundle(b, t, "missing-graph")], "missing"),
    ("size 0x5", lambda b, t: ["--bundle", b, "--size", "0x5"], "at least 1 pixel"),
    ("size abc", lambda b, t: ["--bundle", b, "--size", "abc"], "not WxH"),
    ("size past limit", lambda b, t: ["--bundle", b, "--size", "2000000x1"], "past the limit"),
    ("seeds", lambda b, t: ["--bundle", b, "--seeds", "one"], "not a number"),
    ("seeds backwards", lambda b, t: ["--bundle", b, "--seeds", "5-2"], "backwards"),
    ("tile 0", lambda b, t: ["--bundle", b, "--tile", "0x4"], "at least 1 pixel"),
    ("memory unit", lambda b, t: ["--bundle", b, "--max-memory", "12Q"], "512M"),
    ("memory too small", lambda b, t: ["--bundle", b, "--max-memory", "1K"], "memory budget"),
    ("trunc nan", lambda b, t: ["--bundle", b, "--trunc", "nan"], "psi"),
    ("batch 0", lambda b, t: ["--bundle", b, "--batch", "0"], "batch"),
    ("not png", lambda b, t: ["--bundle", b, "--out", t / "out.jpg"], "PNG"),
    ("unwritable", lambda b, t: ["--bundle", b, "--out", t / "afile" / "out.png"], "afile"),
    ("seeds into a file", lambda b, t: ["--bundle", b, "--seeds", "1,2", "--out", t / "afile"], "folder"),
]


@pytest.mark.parametrize("label,args,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_and_no_file(monkeypatch, capsys, tiny_bundle, tmp_path, label, args, message):
    (tmp_path / "afile").write_text("a file, not a folder")
    out_args = args(tiny_bundle, tmp_path)
    if "--out" not in out_args:
        out_args += ["--out", tmp_path / "out.png"]
    before = set(p.name for p in tmp_path.iterdir())
    code, err = run(monkeypatch, capsys, *out_args)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    assert message in err
    assert set(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temporaries


def test_tile_or_size_outside_an_engines_range(monkeypatch, capsys, tiny_bundle, tmp_path):
    ranges = {("pixels", "cols"): [(1, 1), (3, 3), (32, 32), (8, 64), (8, 8)],
              ("pixels", "rows"): [(1, 1), (3, 3), (32, 32), (8, 64), (8, 8)]}
    monkeypatch.setattr(OrtBackend, "shape_range", lambda self, stage, name: ranges.get((stage, name)))
    for args, message in [(["--tile", "128x16"], "tile width 128"), (["--size", "40x4"], "tile height 4"),
                          (["--seeds", "1,2", "--batch", "2"], "batch 2")]:
        code, err = run(monkeypatch, capsys, "--bundle", tiny_bundle, "--size", "200x40", *args, "--out",
                        tmp_path / ("x.png" if "--batch" not in args else "folder"))
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
    code, err = run(monkeypatch, capsys, "--bundle", tiny_bundle, "--size", "200x40", "--out", tmp_path / "ok.png")
    assert code == 0, err


def test_default_model_missing(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(default_model, "default_checkpoint", lambda: tmp_path / "none.safetensors")
    code, err = run(monkeypatch, capsys, "--out", tmp_path / "x.png")
    assert code == 1 and "no default model" in err and "--bundle" in err


def test_default_model_needs_the_exporter_once(monkeypatch, capsys, tmp_path):
    checkpoint = tmp_path / "network.safetensors"
    checkpoint.write_bytes(b"weights")
    monkeypatch.setattr(default_model, "default_checkpoint", lambda: checkpoint)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "torch" else real(name))
    code, err = run(monkeypatch, capsys, "--out", tmp_path / "x.png")
    assert code == 1 and "needs torch" in err and str(tmp_path / "cache") in err


def cache_the_default(monkeypatch, bundle, tmp_path):
    """A stand-in default checkpoint whose cached bundle is a copy of `bundle`; the cache folder."""
    checkpoint = tmp_path / "network.safetensors"
    checkpoint.write_bytes(b"weights")
    monkeypatch.setattr(default_model, "default_checkpoint", lambda: checkpoint)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cached = default_model.cache_root() / f"default-{default_model.sha256_file(checkpoint)[:16]}"
    shutil.copytree(bundle, cached)
    return cached


def test_default_model_uses_the_cached_bundle(monkeypatch, capsys, tiny_bundle, runtime, tmp_path):
    cache_the_default(monkeypatch, tiny_bundle, tmp_path)
    code, err = run(monkeypatch, capsys, "--size", "20x10", "--out", tmp_path / "x.png")
    assert code == 0, err
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "x.png")), runtime.generate(0, (20, 10))[0])


@pytest.mark.slow
def test_default_model_is_exported_on_first_use(monkeypatch, capsys, tiny_generator, tmp_path):
    from creps.checkpoint import save_checkpoint

    checkpoint = tmp_path / "network.safetensors"
    save_checkpoint(checkpoint, tiny_generator, tiny_generator.cfg)
    monkeypatch.setattr(default_model, "default_checkpoint", lambda: checkpoint)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code, err = run(monkeypatch, capsys, "--size", "24x12", "--seeds", "3", "--out", tmp_path / "x.png")
    assert code == 0, err
    bundle = default_model.default_bundle()  # now cached: no second export
    assert bundle.parent == tmp_path / "cache" / "creps" / "bundles"
    want = Runtime(bundle, backend="ort-cpu").generate(3, (24, 12))[0]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "x.png")), want)


def test_a_damaged_cached_default_bundle_is_exported_again(monkeypatch, capsys, caplog, tiny_bundle, runtime, tmp_path):
    cached = cache_the_default(monkeypatch, tiny_bundle, tmp_path)
    with open(cached / "pixels.onnx", "ab") as graph:
        graph.write(b"\0")  # no longer its manifest's sha256
    exports = []

    def export(source, bundle):  # stands in for the creps-export subprocess: the real bundle again
        exports.append(bundle)
        shutil.rmtree(bundle)
        shutil.copytree(tiny_bundle, bundle)

    monkeypatch.setattr(default_model, "export", export)
    monkeypatch.setattr(default_model, "missing", lambda extra: [])  # the stand-in needs no PyTorch
    code, err = run(monkeypatch, capsys, "--size", "20x10", "--out", tmp_path / "x.png")
    assert code == 0, err
    assert exports == [cached] and "damaged or stale; exporting it again" in caplog.text
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "x.png")), runtime.generate(0, (20, 10))[0])
    code, err = run(monkeypatch, capsys, "--size", "20x10", "--out", tmp_path / "y.png")
    assert code == 0 and exports == [cached]  # now usable: no second export


def test_says_where_it_wrote(monkeypatch, capsys, tiny_bundle, tmp_path):
    monkeypatch.setattr(sys, "argv", ["creps-run", "--bundle", str(tiny_bundle), "--seeds", "1,2", "--size", "8x8",
                                      "--out", str(tmp_path / "many") + "/"])
    main()  # returns on success
    assert capsys.readouterr().out.strip() == f"wrote 2 images into {tmp_path / 'many'}"
