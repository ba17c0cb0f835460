"""A tiny bundle (folded graphs, as creps-export writes them) and its activation-form graphs."""

import sys
from pathlib import Path

import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import random_generator  # noqa: E402



@pytest.fixture(scope="session")
def tiny_G():
    return random_generator()


@pytest.fixture(scope="session")
def tiny_bundle(tiny_G, tmp_path_factory):
    from creps.export import export_bundle

    return export_bundle(tiny_G, tmp_path_factory.mktemp("calib") / "bundle", verify=False)


@pytest.fixture(scope="session")
def tiny_models(tiny_bundle):
    from creps.calib.bundle import load_models
    from creps.runtime.bundle import read_bundle

    return load_models(read_bundle(tiny_bundle))


@pytest.fixture(scope="session")
def activation_models(tiny_G, tiny_bundle):
    from creps.calib.bundle import activation_form_models
    from creps.runtime.bundle import read_bundle

    models = activation_form_models(read_bundle(tiny_bundle), tiny_G)
    assert all(isinstance(m, onnx.ModelProto) for m in models.values())
    return models
