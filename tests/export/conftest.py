"""A small generator (every tensor randomised, images scaled like a trained model's) and its bundle."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from creps.checkpoint import save_checkpoint
from creps.export import export_bundle
from export_support import CONFIG

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import random_generator  # noqa: E402  (tests/tiny_models.py)


@pytest.fixture(scope="session")
def generator():
    return random_generator(CONFIG, seed=3)


@pytest.fixture(scope="session")
def checkpoint(generator, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, generator, CONFIG)
    return path


@pytest.fixture(scope="session")
def bundle(generator, checkpoint, tmp_path_factory):
    """The stages and the fused graph, verified against PyTorch at export."""
    return export_bundle(generator, tmp_path_factory.mktemp("bundles") / "tiny", source=checkpoint, fused=True)
