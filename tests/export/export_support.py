"""Shared by the export tests (a module, not conftest, so that its names import unambiguously)."""

from __future__ import annotations

import shutil

import onnx

from creps.model import GeneratorConfig

# Rank 4 (not the default 8), w_dim != z_dim and 3 entangled blocks, so no size is taken for granted.
CONFIG = GeneratorConfig(z_dim=32, w_dim=24, img_resolution=32, mapping_layers=2, channel_base=1024,
                         channel_max=48, rank=4)


def copy_stage_from(bundle):
    """A stand-in for export_stage that copies the session bundle's graph (tests of the writer's logic)."""

    def copy_stage(G, stage, path, *args, **kwargs):
        shutil.copy(bundle / f"{stage}.onnx", path)
        return onnx.load(str(path))

    return copy_stage
