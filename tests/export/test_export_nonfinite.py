"""Export verification refuses NaN and Inf: no tolerance holds them, and no bundle is written.

verify_bundle runs on the session's exported bundle against another model (it compares a
folder's graphs with a model), so only the command test exports, with the graphs copied.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from creps.checkpoint import save_checkpoint
from creps.errors import ExportError
from creps.export import cli, verify, writer
from export_support import CONFIG, copy_stage_from
from tiny_models import random_generator


def nan_generator():
    G = random_generator(CONFIG, seed=3)
    with torch.no_grad():
        for tensor in G.state_dict().values():
            tensor.fill_(float("nan"))
    return G


def overflowing_generator():
    """Finite weights whose image overflows float32 (an output layer scaled to 3e38)."""
    G = random_generator(CONFIG, seed=3)
    weight = G.state_dict()["synthesis.decoder_img.weight"]
    with torch.no_grad():
        weight.div_(weight.abs().max()).mul_(3e38)
    assert all(torch.isfinite(t).all() for t in G.state_dict().values())
    return G


@pytest.mark.parametrize("make,output", [(nan_generator, "ws"), (overflowing_generator, "img")])
def test_non_finite_model_is_refused(make, output, bundle):
    # Before: NaN - NaN compared as "not above the tolerance", so the bundle was written.
    with pytest.raises(ExportError, match=rf"PyTorch gives non-finite values \(NaN or Inf\) in {output} "
                                          "at square 48x48 batch 1 .*no bundle written"):
        verify.verify_bundle(make(), bundle)


def test_non_finite_graph_output_is_refused(generator, bundle, monkeypatch):
    """A finite model whose exported graph gives one NaN pixel (as an FP16 or engine overflow would)."""
    chained = verify.run_stages

    def one_nan_pixel(*args):
        out = chained(*args)
        out["img"][0, 1, 2, 3] = np.nan
        return out

    monkeypatch.setattr(verify, "run_stages", one_nan_pixel)
    with pytest.raises(ExportError, match=r"ONNX Runtime gives non-finite values \(NaN or Inf\) in img"):
        verify.verify_bundle(generator, bundle)


def test_nan_error_fails_the_tolerance(generator, bundle, monkeypatch):
    """The bar itself: an error that is NaN (whatever made it) fails, it does not pass as 'not above'."""
    monkeypatch.setattr(verify, "check_finite", lambda *args: None)
    monkeypatch.setattr(verify, "compare", lambda ours, ref: ({"img": float("nan")}, {"img": 1.0}))
    with pytest.raises(ExportError, match="img differs from PyTorch by nan"):
        verify.verify_bundle(generator, bundle)


def test_creps_export_of_a_nan_checkpoint_is_one_line(bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(writer, "export_stage", copy_stage_from(bundle))  # finite graphs: PyTorch is refused first
    checkpoint = tmp_path / "nan.safetensors"
    save_checkpoint(checkpoint, nan_generator(), CONFIG)
    monkeypatch.setattr(sys, "argv", ["creps-export", "--network", str(checkpoint), "--out", str(tmp_path / "b"),
                                      "--onnx"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    out, err = capsys.readouterr()
    last = err.strip().splitlines()[-1]  # after the progress bars
    assert exit_info.value.code == 1 and "Traceback" not in err and err.count("error") == 1, err
    assert last.startswith("error: parity check failed: PyTorch gives non-finite values"), err
    assert "wrote" not in out and sorted(p.name for p in tmp_path.iterdir()) == ["nan.safetensors"]
