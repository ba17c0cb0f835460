"""The residual discriminator: shapes, the stddev layer and the blur against plain formulations."""

import numpy as np
import pytest
import torch

from creps.train.discriminator import Discriminator, DiscriminatorConfig, blur_downsample, minibatch_stddev


def reference_stddev(x, group):
    """Loop formulation: for each group of `group` consecutive samples, mean over features of the std."""
    out = []
    for start in range(0, len(x), group):
        members = x[start:start + group].double()
        std = (members.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        out += [torch.cat([m, std.expand(1, *m.shape[1:]).to(m)]) for m in x[start:start + group]]
    return torch.stack(out)


@pytest.mark.parametrize("n,group", [(8, 4), (4, 4), (2, 4), (6, 2), (3, 3)])
def test_minibatch_stddev_matches_loop(n, group):
    x = torch.randn(n, 5, 4, 3)
    assert torch.allclose(minibatch_stddev(x, group), reference_stddev(x, min(group, n)), atol=1e-6)


def test_blur_downsample_matches_numpy():
    x = torch.randn(2, 3, 10, 6)
    taps = np.array([1.0, 3.0, 3.0, 1.0]) / 8
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    ref = np.zeros((2, 3, 5, 3))
    for i in range(5):
        for j in range(3):
            window = padded[:, :, 2 * i:2 * i + 4, 2 * j:2 * j + 4]
            ref[:, :, i, j] = np.einsum("ncij,i,j->nc", window, taps, taps)
    assert np.allclose(blur_downsample(x).numpy(), ref, atol=1e-6)
    const = torch.full((1, 2, 8, 8), 0.7)
    assert torch.allclose(blur_downsample(const), torch.full((1, 2, 4, 4), 0.7))


@pytest.mark.parametrize("res", [8, 16, 32])
def test_discriminator_shapes_and_channels(res):
    cfg = DiscriminatorConfig(img_resolution=res, channel_base=256, channel_max=16)
    D = Discriminator(cfg)
    assert D(torch.randn(4, 3, res, res)).shape == (4, 1)
    assert [b.conv1.weight.shape[0] for b in D.blocks] == [cfg.channels(r // 2) for r in cfg.block_resolutions]
    assert D.blocks[-1].conv1.weight.shape[0] == cfg.channels(4)


def test_groups_are_consecutive_so_split_batches_agree():
    torch.manual_seed(0)
    D = Discriminator(DiscriminatorConfig(img_resolution=16, channel_base=256, channel_max=16))
    x = torch.randn(8, 3, 16, 16)
    whole = D(x)
    halves = torch.cat([D(x[:4]), D(x[4:])])
    assert torch.allclose(whole, halves, atol=1e-6)
    assert not torch.allclose(D(x[:4]), D(x[[0, 1, 2, 4]])[:4], atol=1e-4)  # the group matters


def test_discriminator_refuses_a_batch_the_group_does_not_divide():
    D = Discriminator(DiscriminatorConfig(img_resolution=8, channel_base=64, channel_max=8))
    with pytest.raises(ValueError, match="minibatch-stddev"):
        D(torch.randn(6, 3, 8, 8))
