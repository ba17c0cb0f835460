"""Shared fixtures for the trainer tests: a small image folder and tiny training options."""

from __future__ import annotations

import dataclasses

import pytest

from creps.train.loop import TrainOptions
from train_helpers import write_images


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    write_images(folder, 24)
    return folder


@pytest.fixture
def tiny_options(image_folder, tmp_path):
    """A 16x16 run small enough for a few steps per second on one core."""

    def make(**overrides):
        opts = TrainOptions(data=str(image_folder), outdir=str(tmp_path / "run"), resolution=16, kimg=0.016,
                            batch=4, gamma=1.0, cbase=256, cmax=16, map_depth=2, z_dim=16, snap_kimg=0.008,
                            tick_kimg=0.004, seed=3, cache_dir=str(tmp_path / "cache"), mirror=True)
        return dataclasses.replace(opts, **overrides)

    return make
