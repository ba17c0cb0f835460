"""A tiny bundle (no engines) shared by the TensorRT tests."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import random_generator  # noqa: E402


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    from creps.export import export_bundle

    return export_bundle(random_generator(), tmp_path_factory.mktemp("trt") / "bundle", verify=False)
