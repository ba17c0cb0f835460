"""A tiny generator and its exported bundle, made once per test session (export takes seconds)."""

from __future__ import annotations

import pytest

TINY = dict(z_dim=32, w_dim=32, img_resolution=32, mapping_layers=2, channel_base=1024, channel_max=32)


@pytest.fixture(scope="session")
def tiny_generator():
    torch = pytest.importorskip("torch")
    from creps.model import Generator, GeneratorConfig

    torch.manual_seed(5)
    G = Generator(GeneratorConfig(**TINY)).eval()
    with torch.no_grad():  # a non-zero w_avg, so truncation does something
        G.mapping.w_avg.copy_(torch.randn(G.w_dim) * 0.5)
    return G


@pytest.fixture(scope="session")
def tiny_bundle(tiny_generator, tmp_path_factory):
    pytest.importorskip("onnxscript")
    from creps.export import export_bundle

    return export_bundle(tiny_generator, tmp_path_factory.mktemp("bundle") / "tiny", verify=False)
