"""creps-generate refuses a model that gives NaN or Inf, in one line naming seed and band, and writes no image."""

import sys

import pytest
import torch

import creps.generate as generate
from creps import save_checkpoint
from creps.cli import run_command
from tiny_models import TINY, random_generator


def nan_weights(G):
    for tensor in G.state_dict().values():
        tensor.fill_(float("nan"))


def overflowing_image(G):
    """Finite weights, an image past float32's range."""
    weight = G.state_dict()["synthesis.decoder_img.weight"]
    weight.div_(weight.abs().max()).mul_(3e38)


@pytest.mark.parametrize("spoil", [nan_weights, overflowing_image])
def test_non_finite_model_writes_no_image(spoil, tmp_path, monkeypatch, capsys):
    G = random_generator(TINY, seed=21)
    with torch.no_grad():
        spoil(G)
    checkpoint = tmp_path / "bad.safetensors"
    save_checkpoint(checkpoint, G, G.cfg)
    outdir = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["creps-generate", "--network", str(checkpoint), "--seeds", "7",
                                      "--size", "16x12", "--outdir", str(outdir)])
    with pytest.raises(SystemExit) as exit_info:
        run_command(generate.cli)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in err and err.count("error") == 1, err
    last = err.strip().replace("\r", "\n").splitlines()[-1]  # after the progress bar
    assert last.startswith("error: seed 7: the model gave NaN or Inf in the band of rows 0-11"), err
    assert [p for p in tmp_path.rglob("*.png")] == []
