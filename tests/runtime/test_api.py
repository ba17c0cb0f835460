"""The Python API for apps: the default bundle, latents z and ws instead of seeds, the chosen backend."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from creps.errors import CrepsError
from creps.runtime import Runtime

PSI, SIZE = 0.7, (24, 20)


@pytest.fixture(scope="module")
def runtime(tiny_bundle):
    return Runtime(tiny_bundle, backend="ort-cpu", tile=(16, 8))


def torch_images(G, z, psi=PSI):
    import torch

    with torch.no_grad():
        return G(torch.from_numpy(z), truncation_psi=psi, width=SIZE[0], height=SIZE[1]).numpy()


def test_no_bundle_means_the_default_model(tiny_bundle, monkeypatch):
    # The default bundle's export (minutes) is creps.runtime.default's; here only that Runtime() asks for it.
    monkeypatch.setattr("creps.runtime.generate.default_bundle", lambda: tiny_bundle)
    assert Runtime(backend="ort-cpu").bundle.path == Runtime(tiny_bundle, backend="ort-cpu").bundle.path


def test_z_of_seeds_is_the_seed_path(runtime):
    z = runtime.z([3, 11])
    np.testing.assert_array_equal(z[1], np.random.RandomState(11).randn(32).astype(np.float32))  # the original's
    np.testing.assert_array_equal(runtime.generate(z=z, size=SIZE, psi=PSI), runtime.generate([3, 11], SIZE, PSI))


def test_an_apps_own_z_matches_pytorch(runtime, tiny_generator):
    z = runtime.z([3, 11])
    blend = np.stack([np.cos(t) * z[0] + np.sin(t) * z[1] for t in (0.3, 1.1, 1.4)])  # (3, z_dim), slerp-like
    got = runtime.generate(z=blend, size=SIZE, psi=PSI, out="float", batch=2)
    np.testing.assert_allclose(got, torch_images(tiny_generator, blend), atol=1e-4, rtol=0)


def test_ws_path_equals_mapping_then_synthesis(runtime, tiny_generator, tmp_path):
    import torch

    z = runtime.z([5, 6])
    ws = runtime.mapping(z, PSI)  # (2, num_ws, w_dim)
    with torch.no_grad():
        want_ws = tiny_generator.mapping(torch.from_numpy(z), truncation_psi=PSI).numpy()
    np.testing.assert_allclose(ws, want_ws, atol=1e-5, rtol=0)
    edited = ws.copy()
    edited[:, 4:] = ws[::-1, 4:]  # style mixing: the later ws of the other image
    with torch.no_grad():
        want = tiny_generator.synthesis(torch.from_numpy(edited), width=SIZE[0], height=SIZE[1]).numpy()
    np.testing.assert_allclose(runtime.generate(ws=edited, size=SIZE, out="float"), want, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(runtime.generate(ws=ws, size=SIZE), runtime.generate([5, 6], SIZE, PSI))
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    runtime.save(paths, ws=ws, size=SIZE)
    from PIL import Image

    saved = np.stack([np.asarray(Image.open(p)) for p in paths])
    np.testing.assert_array_equal(saved, runtime.generate(ws=ws, size=SIZE))


@pytest.mark.parametrize("request_,message", [  # request_(num_ws): the arguments
    (lambda n: dict(seeds=[1], z=np.zeros((1, 32))), "seeds and z given: pass one of seeds, z or ws"),
    (lambda n: dict(z=np.zeros((1, 32)), ws=np.zeros((1, n, 32))), "z and ws given"),
    (lambda n: dict(z=np.zeros((2, 31))), r"z has shape \[2, 31\]; this bundle's model takes \[N, 32\], N >= 1"),
    (lambda n: dict(z=np.zeros(32)), r"z has shape \[32\]"),
    (lambda n: dict(z=np.zeros((0, 32))), r"z has shape \[0, 32\]"),
    (lambda n: dict(z=np.full((1, 32), np.nan)), "z has NaN or Inf values"),
    (lambda n: dict(z="abc"), "z is not an array of numbers"),
    (lambda n: dict(ws=np.zeros((1, n - 1, 32))),
     r"ws has shape \[1, \d+, 32\]; this bundle's model takes \[N, \d+, 32\]"),
    (lambda n: dict(ws=np.zeros((1, n, 32)), psi=0.5), "psi 0.5 with ws: truncation happens in the mapping"),
])
def test_bad_latents_are_one_line(runtime, request_, message):
    with pytest.raises(CrepsError, match=message) as error:
        runtime.generate(size=SIZE, **request_(runtime.model["num_ws"]))
    assert "\n" not in str(error.value)


def test_save_counts_images_not_seeds(runtime, tmp_path):
    with pytest.raises(CrepsError, match="1 output paths for 2 images"):
        runtime.save([tmp_path / "a.png"], z=runtime.z([1, 2]), size=SIZE)
    assert list(tmp_path.iterdir()) == []


def test_auto_backend_says_what_it_chose_and_why(tiny_bundle, caplog):
    import onnxruntime

    with caplog.at_level(logging.INFO, logger="creps.runtime.backends"):
        chosen = Runtime(tiny_bundle, backend="auto")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("auto backend: ")]
    assert lines == [f"auto backend: {chosen.backend_name} ({lines[0].split('(', 1)[1]}"]
    assert chosen.backend_name == chosen.backend.name
    assert "the bundle has no TensorRT engines" in lines[0]
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert chosen.backend_name == "ort-cpu"
        assert "ort-cuda: this onnxruntime has no CUDAExecutionProvider" in lines[0]
    assert Runtime(tiny_bundle, backend="ort-cpu").backend_name == "ort-cpu"
