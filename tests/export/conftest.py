"""A small generator (every tensor randomised, images scaled like a trained model's) and its bundle."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import onnx
import pytest

from creps.checkpoint import save_checkpoint
from creps.export import export_bundle
from creps.model import GeneratorConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import random_generator  # noqa: E402  (tests/tiny_models.py)

# Rank 4 (not the default 8), w_dim != z_dim and 3 entangled blocks, so no size is taken for granted.
CONFIG = GeneratorConfig(z_dim=32, w_dim=24, img_resolution=32, mapping_layers=2, channel_base=1024,
                         channel_max=48, rank=4)


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


def copy_stage_from(bundle):
    """A stand-in for export_stage that copies the session bundle's graph (tests of the writer's logic)."""
    def copy_stage(G, stage, path, *args, **kwargs):
        shutil.copy(bundle / f"{stage}.onnx", path)
        return onnx.load(str(path))

    return copy_stage
