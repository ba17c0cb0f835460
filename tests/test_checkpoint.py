"""Our safetensors checkpoints: round trip, atomic writes, refusal of wrong or broken files."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import creps.checkpoint as checkpoint
from creps import load_generator, save_checkpoint
from creps.errors import CheckpointError
from tiny_models import TINY, random_generator


@pytest.fixture(scope="module")
def G():
    return random_generator(TINY, seed=31)


def images(G, **kwargs):
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        return G(z, truncation_psi=0.6, **kwargs)


def test_save_load_same_images(tmp_path, G):
    path = tmp_path / "g.safetensors"
    save_checkpoint(path, G, G.cfg, metadata={"creps.kimg": "120"})
    loaded = load_generator(path)
    assert loaded.cfg == G.cfg and not loaded.training
    for size in [dict(), dict(height=5, width=27), dict(height=1, width=9)]:
        assert torch.equal(images(loaded, **size), images(G, **size))
    # the unused b4-tores and decoder_8 tensors round-trip too
    for key, value in G.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    _, meta = checkpoint.read_checkpoint(path)
    assert meta["creps.kimg"] == "120" and json.loads(meta["creps.config"]) == G.cfg.to_dict()


def test_training_snapshot_loads_G_ema(tmp_path, G):
    G_train = random_generator(TINY, seed=32)
    D = torch.nn.Linear(3, 4)
    path = tmp_path / "snap.safetensors"
    save_checkpoint(path, {"G": G_train, "D": D, "G_ema": G}, G.cfg)
    keys = load_file(str(path)).keys()
    assert {"G_ema.mapping.w_avg", "G.mapping.w_avg", "D.weight"} <= set(keys)
    assert torch.equal(images(load_generator(path)), images(G))
    save_checkpoint(path, {"G": G_train, "D": D}, G.cfg)
    assert torch.equal(images(load_generator(path)), images(G_train))


def test_write_is_atomic(tmp_path, G, monkeypatch):
    path = tmp_path / "g.safetensors"
    save_checkpoint(path, G, G.cfg)
    before = path.read_bytes()

    def dies_half_way(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", dies_half_way)
    with pytest.raises(OSError):
        save_checkpoint(path, random_generator(TINY, seed=33), TINY)
    assert path.read_bytes() == before  # the old file is untouched
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "new.safetensors", G, G.cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.safetensors"]  # no new file, no temp file


def write(path, meta, tensors=None):
    save_file(tensors or {"x": torch.zeros(2)}, str(path), metadata=meta)


@pytest.mark.parametrize("meta,match", [
    (None, "not a creps checkpoint"),
    ({"creps.format": "something-else", "creps.version": "1"}, "not a creps checkpoint"),
    ({"creps.format": "creps-checkpoint", "creps.version": "2"}, "version '2'"),
    ({"creps.format": "creps-checkpoint", "creps.version": "1"}, "bad creps.config"),
    ({"creps.format": "creps-checkpoint", "creps.version": "1", "creps.config": "{not json"}, "bad creps.config"),
    ({"creps.format": "creps-checkpoint", "creps.version": "1", "creps.config": '{"z_dim": 8, "colour": 1}'},
     "colour"),
    ({"creps.format": "creps-checkpoint", "creps.version": "1", "creps.config": '{"img_resolution": 12}'},
     "power of two"),
])
def test_wrong_format_version_or_config(tmp_path, meta, match):
    path = tmp_path / "w.safetensors"
    write(path, meta)
    with pytest.raises(CheckpointError, match=match):
        load_generator(path)


def test_tensors_must_match_config(tmp_path, G):
    path = tmp_path / "m.safetensors"
    state = dict(G.state_dict())
    state.pop("synthesis.b8.fc0.weight")
    meta = {"creps.format": "creps-checkpoint", "creps.version": "1", "creps.config": json.dumps(G.cfg.to_dict())}
    write(path, meta, {k: v.contiguous() for k, v in state.items()})
    with pytest.raises(CheckpointError, match="missing synthesis.b8.fc0.weight"):
        load_generator(path)
    state["synthesis.b8.fc0.weight"] = torch.zeros(3, 3)
    write(path, meta, {k: v.contiguous() for k, v in state.items()})
    with pytest.raises(CheckpointError, match="shape"):
        load_generator(path)


@pytest.mark.parametrize("cut", [0, 7, 100, 0.5, 0.999])
def test_truncated_or_corrupt_file(tmp_path, G, cut):
    path = tmp_path / "g.safetensors"
    save_checkpoint(path, G, G.cfg)
    data = path.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else cut
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match="g.safetensors"):
        load_generator(path)


def test_garbage_header(tmp_path):
    path = tmp_path / "g.safetensors"
    path.write_bytes(b"\x20\x00\x00\x00\x00\x00\x00\x00" + b"{" * 32 + b"rest")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_generator(path)


def test_header_length_with_a_pickle_like_first_byte(tmp_path, G):
    """A safetensors file whose header length starts with byte 0x80 is not taken for a pickle."""
    path = tmp_path / "g.safetensors"
    for pad in range(256):
        save_checkpoint(path, G, G.cfg, metadata={"creps.pad": "x" * pad})
        if path.read_bytes()[:1] == b"\x80":
            break
    assert path.read_bytes()[:1] == b"\x80"
    assert torch.equal(images(load_generator(path)), images(G))


@pytest.mark.parametrize("field, value", [("z_dim", "32"), ("z_dim", True), ("w_dim", 2**40), ("rank", 0),
                                          ("rank", 2.5), ("bandwidth", float("nan")), ("fc_clamp", "256")])
def test_config_fields_are_typed(tmp_path, G, field, value):
    """Found by the fuzzer: a string, bool or float size reached torch.randn as a TypeError traceback."""
    path = tmp_path / "c.safetensors"
    config = json.dumps({**G.cfg.to_dict(), field: value})
    write(path, {"creps.format": "creps-checkpoint", "creps.version": "1", "creps.config": config},
          {k: v.contiguous() for k, v in G.state_dict().items()})
    with pytest.raises(CheckpointError, match=f"generator config {field} = .* must be"):
        load_generator(path)


def test_a_config_far_larger_than_its_tensors_allocates_nothing(tmp_path, G):
    """z_dim = w_dim = 2**20 would be a 4 TiB mapping layer: refused before it is allocated."""
    path = tmp_path / "big.safetensors"
    config = json.dumps({**G.cfg.to_dict(), "z_dim": 2**20, "w_dim": 2**20})
    write(path, {"creps.format": "creps-checkpoint", "creps.version": "1", "creps.config": config},
          {k: v.contiguous() for k, v in G.state_dict().items()})
    with pytest.raises(CheckpointError, match="describes a model far larger than the checkpoint"):
        load_generator(path)


def test_a_block_without_channels_is_refused(tmp_path, G):
    """channel_base below img_resolution gave the last block 0 channels: a ZeroDivisionError traceback."""
    path = tmp_path / "c.safetensors"
    config = json.dumps({**G.cfg.to_dict(), "channel_base": G.cfg.img_resolution // 2})
    write(path, {"creps.format": "creps-checkpoint", "creps.version": "1", "creps.config": config},
          {k: v.contiguous() for k, v in G.state_dict().items()})
    with pytest.raises(CheckpointError, match="non-positive size"):
        load_generator(path)
