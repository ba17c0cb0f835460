"""creps-generate: bad input gives one line and a non-zero exit; images equal the model's output."""

import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

import creps.generate as generate
from creps import load_generator, save_checkpoint
from in_process import in_process
from tiny_models import TINY, random_generator


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("net") / "tiny.safetensors"
    G = random_generator(TINY, seed=21)
    save_checkpoint(path, G, G.cfg)
    return path


def run(monkeypatch, capsys, *args):
    """Run the command in-process through the same boundary as the console script."""
    return in_process(monkeypatch, capsys, generate.cli, "creps-generate", *args)


def expected_pixels(G, seed, psi=1.0, **kwargs):
    """The original's recipe: RandomState(seed).randn latent, clamp(img * 127.5 + 128) truncated to uint8."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
    with torch.no_grad():
        img = G(z, truncation_psi=psi, **kwargs)
    return (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].numpy()


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def assert_one_line_error(code, err, *needles, after_progress=False):
    """Exactly one line on stderr (after the progress bar, for failures during generation)."""
    assert code == 1
    if after_progress:
        assert "\r" in err  # the bar was drawn
        err = err.split("\n", 1)[1]
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize("option,value,needle", [
    ("--size", "0x5", "at least 1 pixel"), ("--size", "-3x4", "not WxH"), ("--size", "abc", "not WxH"),
    ("--size", "100000x100000", "past the limit"), ("--size", "5x", "not WxH"),
    ("--seeds", "3-1", "backwards"), ("--seeds", "x", "not a number"), ("--seeds", "-2", "not a number"),
    ("--window", "0,0,1", "four numbers"), ("--fit", "crop", "crop"), ("--trunc", "nan", "finite"),
    ("--trunc", "abc", "--trunc"), ("--trunc-cutoff", "-1", "--trunc-cutoff"), ("--trunc-cutoff", "99", "past"),
    ("--device", "cuda", "CUDA"), ("--device", "nonsense", "device"), ("--bogus", "1", "--bogus"),
])
def test_bad_input_is_one_line(monkeypatch, capsys, tmp_path, ckpt, option, value, needle):
    if option == "--device" and value == "cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    outdir = tmp_path / "out"
    code, _, err = run(monkeypatch, capsys, "--network", ckpt, "--outdir", outdir, option, value)
    assert_one_line_error(code, err, needle)
    assert not outdir.exists()


def test_bad_network(monkeypatch, capsys, tmp_path):
    for name, content in [("missing.pkl", None), ("corrupt.safetensors", b"\x10\x00\x00\x00junk" * 5),
                          ("corrupt.pkl", b"\x80\x04garbage"), ("empty.safetensors", b"")]:
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        code, _, err = run(monkeypatch, capsys, "--network", path, "--outdir", tmp_path / "out")
        assert_one_line_error(code, err, name)
    assert not (tmp_path / "out").exists()


def test_no_network_and_none_bundled(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(generate, "DEFAULT_NETWORK", tmp_path / "absent.safetensors")
    code, _, err = run(monkeypatch, capsys, "--outdir", tmp_path / "out")
    assert_one_line_error(code, err, "no --network given")


def test_bundled_default_network(monkeypatch, capsys, tmp_path, ckpt):
    monkeypatch.setattr(generate, "DEFAULT_NETWORK", ckpt)
    code, _, err = run(monkeypatch, capsys, "--seeds", "4", "--outdir", tmp_path / "out")
    assert code == 0, err
    pixels = np.asarray(Image.open(tmp_path / "out" / "seed0004.png"))
    assert np.array_equal(pixels, expected_pixels(load_generator(ckpt), 4))


@pytest.mark.parametrize("args,kwargs", [
    ([], dict(height=16, width=16)),
    (["--size", "37x11", "--trunc", "0.6"], dict(psi=0.6, height=11, width=37)),
    (["--size", "9x30", "--fit", "stretch"], dict(height=30, width=9, fit="stretch")),
    (["--size", "20x12", "--window", "-0.5,0.25,1.5,0.75", "--trunc", "0.5", "--trunc-cutoff", "2"],
     dict(psi=0.5, truncation_cutoff=2, height=12, width=20, window=(-0.5, 0.25, 1.5, 0.75))),
])
def test_images_equal_the_models_output(monkeypatch, capsys, tmp_path, ckpt, args, kwargs):
    outdir = tmp_path / "out"
    code, _, err = run(monkeypatch, capsys, "--network", ckpt, "--seeds", "0,2,5-6", "--outdir", outdir, *args)
    assert code == 0, err
    assert leftovers(outdir) == ["seed0000.png", "seed0002.png", "seed0005.png", "seed0006.png"]
    G = load_generator(ckpt)
    for seed in (0, 2, 5, 6):
        pixels = np.asarray(Image.open(outdir / f"seed{seed:04d}.png"))
        assert np.array_equal(pixels, expected_pixels(G, seed, **kwargs)), seed


def test_row_bands_match_the_whole_image(monkeypatch, capsys, tmp_path, ckpt):
    monkeypatch.setattr(generate, "PIXELS_PER_BAND", 3 * 41)  # 3 rows per band
    code, _, err = run(monkeypatch, capsys, "--network", ckpt, "--seeds", "3", "--size", "41x23",
                       "--outdir", tmp_path)
    assert code == 0, err
    pixels = np.asarray(Image.open(tmp_path / "seed0003.png")).astype(int)
    expected = expected_pixels(load_generator(ckpt), 3, height=23, width=41).astype(int)
    # float32 sums in another order may move a value across a level boundary, never by more
    assert np.abs(pixels - expected).max() <= 1 and (pixels == expected).mean() > 0.99


def test_failed_write_leaves_no_partial_file(monkeypatch, capsys, tmp_path, ckpt):
    real_save = Image.Image.save
    calls = []

    def failing_save(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 2:  # the second image dies half-way through its write
            with open(fp, "wb") as f:
                f.write(b"\x89PNG\r\n\x1a\n half")
            raise OSError(28, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    outdir = tmp_path / "out"
    code, _, err = run(monkeypatch, capsys, "--network", ckpt, "--seeds", "0-2", "--outdir", outdir)
    assert_one_line_error(code, err, "No space left", after_progress=True)
    assert leftovers(outdir) == ["seed0000.png"]
    Image.open(outdir / "seed0000.png").verify()


def test_failed_generation_leaves_no_file(monkeypatch, capsys, tmp_path, ckpt):
    real_render = generate.render

    def render(G, z, *args):
        if len(rendered) == 1:
            raise MemoryError
        rendered.append(z)
        return real_render(G, z, *args)

    rendered = []
    monkeypatch.setattr(generate, "render", render)
    outdir = tmp_path / "out"
    code, _, err = run(monkeypatch, capsys, "--network", ckpt, "--seeds", "7,8", "--outdir", outdir)
    assert_one_line_error(code, err, "out of memory", after_progress=True)
    assert leftovers(outdir) == ["seed0007.png"]


def test_installed_script(tmp_path):
    script = shutil.which("creps-generate")
    if script is None:
        pytest.skip("creps-generate is not installed (pip install -e .)")
    result = subprocess.run([script, "--size", "0x5", "--outdir", str(tmp_path / "o")], capture_output=True,
                            text=True, timeout=120)
    assert_one_line_error(result.returncode, result.stderr, "--size")
    help_text = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120).stdout
    assert "creps-generate --network" in help_text and "--size" in help_text
