"""Original CREPS pickles: round trip through the original format, and refusal of anything unsafe.

Pickles are written by tests/original_format.py from our own model (no original code).
"""

import pickle
import pickletools
import subprocess
import sys
import time

import pytest
import torch

import original_format as of
from creps import load_generator
from creps.errors import CheckpointError
from tiny_models import TINY, random_generator


@pytest.fixture(scope="module")
def G_ema():
    return random_generator(TINY, seed=11)


@pytest.fixture(scope="module")
def G_train():
    return random_generator(TINY, seed=12)


def images(G, seeds=(0, 1, 2), **kwargs):
    z = torch.randn(len(seeds), G.z_dim, generator=torch.Generator().manual_seed(sum(seeds)))
    with torch.no_grad():
        return G(z, truncation_psi=0.7, **kwargs)


@pytest.mark.parametrize("numpy_major", [1, 2])
def test_round_trip_prefers_G_ema(tmp_path, G_ema, G_train, numpy_major):
    path = tmp_path / "network-snapshot-000100.pkl"
    of.write_pickle(path, of.snapshot(G_ema, G_train), numpy_major=numpy_major)
    loaded = load_generator(path)
    assert loaded.cfg == TINY
    for key, value in G_ema.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    for size in [dict(), dict(height=7, width=30), dict(height=25, width=1)]:
        assert torch.equal(images(loaded, **size), images(G_ema, **size))
    assert not torch.equal(images(loaded), images(G_train))


def test_G_is_used_without_G_ema(tmp_path, G_ema, G_train):
    data = of.snapshot(G_ema, G_train)
    del data["G_ema"]
    of.write_pickle(tmp_path / "g.pkl", data)
    assert torch.equal(images(load_generator(tmp_path / "g.pkl")), images(G_train))


def test_config_follows_init_kwargs(tmp_path):
    cfg = TINY.__class__(**{**TINY.to_dict(), "img_resolution": 32, "biline_channels": 16, "rank": 3,
                            "mapping_layers": 3, "fc_clamp": 64.0})
    G = random_generator(cfg, seed=2)
    of.write_pickle(tmp_path / "c.pkl", of.snapshot(G))
    loaded = load_generator(tmp_path / "c.pkl")
    assert loaded.cfg == cfg
    assert torch.equal(images(loaded, height=5, width=9), images(G, height=5, width=9))


# ---- refusals: nothing a pickle carries may run --------------------------------------------

def wait_for(path, seconds=2.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end and not path.exists():
        time.sleep(0.05)
    return path.exists()


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "subprocess.check_output", "subprocess.Popen"])
def test_payloads_would_run_under_plain_pickle(tmp_path, name):
    """Control: these payloads really execute when a pickle is loaded the ordinary way."""
    marker = tmp_path / "ran"
    pickle.loads(of.dumps(of.payloads(marker)[name]))
    assert wait_for(marker)


def test_storage_payload_would_run_under_torch(tmp_path):
    """Control: torch's own _load_from_bytes runs a payload hidden in a storage blob."""
    marker = tmp_path / "ran"
    with pytest.raises(RuntimeError, match="magic number"):  # after the payload ran, torch finds no storage
        pickle.loads(of.dumps(of.hostile_tensor(of.payloads(marker)["os.system"])))
    assert marker.exists()


@pytest.mark.parametrize("name", list(of.payloads("m")))
@pytest.mark.parametrize("where", ["top", "inside_state", "storage_blob"])
def test_payload_is_refused_by_name_and_never_runs(tmp_path, G_ema, name, where):
    marker = tmp_path / "ran"
    payload = of.payloads(marker)[name]
    data = of.snapshot(G_ema)
    mapping = data["G_ema"].state["_modules"]["mapping"]
    if where == "top":
        data["evil"] = payload
    elif where == "inside_state":
        mapping.state["_init_kwargs"]["hook"] = payload
    else:
        mapping.state["_buffers"]["w_avg"] = of.hostile_tensor(payload, (TINY.w_dim,))
    path = tmp_path / "evil.pkl"
    of.write_pickle(path, data)
    with pytest.raises(CheckpointError) as err:
        load_generator(path)
    message = str(err.value)
    # torch's weights-only loader, which reads storage blobs, names builtins without their module
    named = name.removeprefix("builtins.") if where == "storage_blob" else name
    assert "refused" in message and named in message and "\n" not in message
    assert not wait_for(marker, 0.2)


def test_embedded_source_is_never_executed(tmp_path, G_ema):
    marker = tmp_path / "ran"
    data = of.snapshot(G_ema)
    data["G_ema"].module_src = f"open({str(marker)!r}, 'w').close()\nraise SystemExit(3)\n"
    of.write_pickle(tmp_path / "src.pkl", data)
    assert torch.equal(images(load_generator(tmp_path / "src.pkl")), images(G_ema))
    assert not marker.exists()


def test_refusal_through_the_cli_is_one_line(tmp_path, G_ema):
    marker = tmp_path / "ran"
    data = of.snapshot(G_ema, evil=of.payloads(marker)["os.system"])
    of.write_pickle(tmp_path / "evil.pkl", data)
    result = subprocess.run([sys.executable, "-c", "from creps.generate import main; main()", "--network",
                             str(tmp_path / "evil.pkl"), "--outdir", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and not marker.exists() and not (tmp_path / "out").exists()
    assert result.stderr.count("\n") == 1 and "os.system" in result.stderr and "Traceback" not in result.stderr


# ---- broken files ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_bytes(G_ema):
    return of.dumps(of.snapshot(G_ema))


@pytest.mark.parametrize("cut", [0, 1, 2, 100, 5000, 0.5, 0.99])
def test_truncated_pickle_is_a_clear_error(tmp_path, good_bytes, cut):
    n = int(len(good_bytes) * cut) if isinstance(cut, float) else cut
    path = tmp_path / "cut.pkl"
    path.write_bytes(good_bytes[:n])
    with pytest.raises(CheckpointError, match="cut.pkl"):
        load_generator(path)


def test_corrupt_pickle_is_a_clear_error(tmp_path, good_bytes):
    """Overwrite opcodes of the structure (not tensor bytes) at 40 random places."""
    ops = [pos for op, arg, pos in pickletools.genops(good_bytes) if pos > 2]
    gen = torch.Generator().manual_seed(0)
    path = tmp_path / "corrupt.pkl"
    errors = 0
    for _ in range(40):
        data = bytearray(good_bytes)
        pos = ops[int(torch.randint(len(ops), (1,), generator=gen))]
        data[pos:pos + 4] = bytes(torch.randint(0, 256, (4,), generator=gen).tolist())
        path.write_bytes(bytes(data))
        try:
            G = load_generator(path)
        except CheckpointError as exc:
            assert "corrupt.pkl" in str(exc) and "\n" not in str(exc)
            errors += 1
        else:  # a harmless change (a memo index, a flag): still a whole generator
            assert G.cfg == TINY
    assert errors >= 30


@pytest.mark.parametrize("content", [b"", b"hello world\n", b"\x80\x04K\x01.", b"\x80\x02}q\x00."])
def test_not_a_network_pickle(tmp_path, content):
    path = tmp_path / "x.pkl"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="x.pkl"):
        load_generator(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        load_generator(tmp_path / "nope.pkl")


def test_G_that_is_not_a_generator(tmp_path):
    data = {"G_ema": of.discriminator(), "D": of.discriminator()}
    of.write_pickle(tmp_path / "d.pkl", data)
    with pytest.raises(CheckpointError, match="Discriminator, not a CREPS Generator"):
        load_generator(tmp_path / "d.pkl")


@pytest.mark.parametrize("kwargs,match", [(dict(c_dim=10), "c_dim"),
                                          (dict(mapping_kwargs=of.EasyDict(num_layers=2, embed_features=64)),
                                           "embed_features"),
                                          (dict(unknown_option=3), "unknown_option")])
def test_unsupported_config(tmp_path, G_ema, kwargs, match):
    data = of.snapshot(G_ema)
    data["G_ema"] = of.original_generator(G_ema, **kwargs)
    of.write_pickle(tmp_path / "u.pkl", data)
    with pytest.raises(CheckpointError, match=match):
        load_generator(tmp_path / "u.pkl")


def test_tensor_shapes_must_match_the_config(tmp_path, G_ema):
    data = of.snapshot(G_ema)
    data["G_ema"].state["_init_kwargs"]["channel_max"] = 16
    of.write_pickle(tmp_path / "s.pkl", data)
    with pytest.raises(CheckpointError, match="shape"):
        load_generator(tmp_path / "s.pkl")


# A numpy dtype as numpy pickles it (protocol 0): dtype('f8', False, True), then BUILD with its state.
DTYPE = b"cnumpy\ndtype\n(Vf8\nI00\nI01\ntR(I3\nV<\nNNN%sI-1\nI0\ntb."


def test_a_damaged_numpy_dtype_state_never_reaches_numpy():
    """Found by the fuzzer: numpy's dtype.__setstate__ trusts its state; a damaged one crashed
    the interpreter (a segfault, no error at all). The pickle now gets a record of name and order."""
    import io

    from creps.original import RestrictedUnpickler

    good = RestrictedUnpickler(io.BytesIO(DTYPE % b"I8\n")).load()
    assert good.resolve() == __import__("numpy").dtype("<f8")
    damaged = RestrictedUnpickler(io.BytesIO(DTYPE % b"I-9\n")).load()  # an element size numpy would trust
    assert damaged.resolve().itemsize == 8
    with pytest.raises(CheckpointError, match="numpy dtype 'O'"):
        RestrictedUnpickler(io.BytesIO(DTYPE.replace(b"Vf8", b"VO") % b"I8\n")).load()
