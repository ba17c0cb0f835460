"""creps-bench's arithmetic against the figures CREPS_MODEL.md states for the published config."""

from __future__ import annotations

import pytest

from creps.bench import flops, line_macs_per_slot, pixel_macs

PUBLISHED = {"channel_base": 65536, "channel_max": 1024, "blocks": [8, 16, 32, 64, 128, 256], "num_blocks": 6,
             "biline_channels": 32, "rank": 8, "img_channels": 3}


def test_per_slot_and_per_pixel_costs():
    assert line_macs_per_slot(PUBLISHED) == pytest.approx(10.6e6, rel=0.01)  # "≈ 10.6 M per position-slot"
    assert pixel_macs(PUBLISHED) == pytest.approx(158e3, rel=0.01)  # "≈ 158 k per pixel"


@pytest.mark.parametrize("width,height,lines,pixels", [(256, 256, 43e9, 10e9), (512, 512, 87e9, 41e9),
                                                       (2048, 512, 217e9, 166e9)])
def test_image_costs(width, height, lines, pixels):
    cost = flops(PUBLISHED, width, height)  # FLOP = 2 x multiply-adds
    assert cost["lines"] / 2 == pytest.approx(lines, rel=0.02)
    assert cost["pixels"] / 2 == pytest.approx(pixels, rel=0.04)
    assert cost["total"] == cost["lines"] + cost["pixels"]


def test_small_config_by_hand():
    # channels: b4 16, b8 8 (base 64, max 16); one entangled block, biline 4, rank 2.
    model = {"channel_base": 64, "channel_max": 16, "blocks": [8], "num_blocks": 1, "biline_channels": 4, "rank": 2,
             "img_channels": 3}
    assert line_macs_per_slot(model) == 16 * 16 + 16 * 8 + 8 * 8 + 8 * 4
    decoder = 4 * 8 + 8 * 16 + 16 * 8 + 8 * 4
    assert pixel_macs(model) == 4 * 2 + decoder + 4 * 3 + (4 * 16 + 16 * 16 + 16 * 3) + (16 * 8 + 8 * 8 + 8 * 3)
