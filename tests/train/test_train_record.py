"""The run record: G_ema-only checkpoint with metadata, loss plot, sample grid."""

import json
import sys

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open

from creps import grid
from creps.checkpoint import load_generator
from creps.cli import run_command
from creps.train.loop import train
from creps.train.record import cli, tile_grid


def test_tile_grid_layout():
    tiles = np.arange(6 * 2 * 2 * 3, dtype=np.uint8).reshape(6, 2, 2, 3)
    out = tile_grid(tiles, rows=2, cols=3)
    assert out.shape == (4, 6, 3)
    assert np.array_equal(out[2:4, 4:6], tiles[5]) and np.array_equal(out[0:2, 2:4], tiles[1])


def test_record_from_a_snapshot(tiny_options, tmp_path, monkeypatch):
    snapshot = train(tiny_options(kimg=0.008))
    out = tmp_path / "default" / "network.safetensors"
    args = ["--snapshot", str(snapshot), "--out", str(out), "--plot", str(tmp_path / "loss.png"),
            "--grid", str(tmp_path / "grid.png"), "--note", "command=creps-train --x 1", "--note", "minutes=2"]
    monkeypatch.setattr(sys, "argv", ["record", *args])
    run_command(cli)
    with safe_open(str(out), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert not any(k.startswith(("G.", "D.", "state.", "G_ema.")) for k in keys)  # a plain generator
    record = json.loads(meta["creps.record"])
    assert record["kimg"] == 0.008 and record["steps"] == 2 and record["command"] == "creps-train --x 1"
    assert json.loads(out.with_suffix(".json").read_text()) == record
    G, G_ema = load_generator(out), load_generator(snapshot)
    for (k, a), b in zip(G.state_dict().items(), G_ema.state_dict().values()):
        assert torch.equal(a, b), k
    pixels = np.asarray(Image.open(tmp_path / "grid.png"))
    assert pixels.shape == (4 * 16, 8 * 16, 3)
    z = torch.from_numpy(grid.seed_to_z(9, G.z_dim))  # seed 9: row 1, column 1
    with torch.no_grad():
        expected = grid.to_uint8(G(z).numpy())[0]
    assert np.array_equal(pixels[16:32, 16:32], expected)
    assert Image.open(tmp_path / "loss.png").size[0] > 300
