"""FID arithmetic against scipy's sqrtm formulation, and the metric's plumbing."""

import numpy as np
import pytest
import scipy.linalg
import torch

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

from creps.train.fid import FidMetric, detect, feature_statistics, frechet_distance, to_uint8_tensor


def scipy_fid(mu1, cov1, mu2, cov2):
    """The usual reference: |mu1-mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2))."""
    root = scipy.linalg.sqrtm(cov1 @ cov2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1 + cov2 - 2 * np.real(root)))


@pytest.mark.parametrize("n,dim,shift", [(500, 8, 0.0), (300, 33, 0.5), (64, 20, 2.0), (2000, 64, 0.1)])
def test_frechet_distance_matches_scipy(n, dim, shift):
    rng = np.random.RandomState(dim)
    mix = rng.randn(dim, dim)
    a = rng.randn(n, dim) @ mix
    b = rng.randn(n, dim) @ (mix + 0.3 * rng.randn(dim, dim)) + shift
    stats_a, stats_b = feature_statistics(a), feature_statistics(b)
    ours = frechet_distance(*stats_a, *stats_b)
    assert ours == pytest.approx(scipy_fid(*stats_a, *stats_b), rel=1e-6, abs=1e-8)
    assert ours > 0


def test_frechet_distance_rank_deficient_and_identical():
    rng = np.random.RandomState(0)
    a = rng.randn(10, 30)  # fewer samples than features: singular covariance
    b = rng.randn(12, 30) + 1.0
    sa, sb = feature_statistics(a), feature_statistics(b)
    assert frechet_distance(*sa, *sb) == pytest.approx(scipy_fid(*sa, *sb), rel=1e-5)
    assert frechet_distance(*sa, *sa) == pytest.approx(0.0, abs=1e-6 * np.trace(sa[1]))


def test_frechet_distance_gaussians_closed_form():
    """Diagonal covariances: FID = |dmu|^2 + sum (sqrt(s1) - sqrt(s2))^2."""
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
    expected = 5.0 + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected)


class MeanColour(torch.nn.Module):
    """A stand-in feature extractor: per-channel mean and std of uint8 images."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


class ConstantGenerator(torch.nn.Module):
    z_dim = 4

    def forward(self, z):
        return torch.tanh(z[:, :3, None, None]).expand(-1, 3, 8, 8)


def test_fid_metric_with_a_torchscript_extractor(tmp_path):
    path = tmp_path / "features.pt"
    torch.jit.save(torch.jit.script(MeanColour()), str(path))
    images = (np.random.RandomState(1).rand(40, 3, 8, 8) * 255).astype(np.uint8)
    metric = FidMetric(str(path), images, num_images=40, device=torch.device("cpu"))
    fid = metric(ConstantGenerator())
    # The same numbers by hand.
    detector = torch.jit.load(str(path))
    real = feature_statistics(detect(detector, torch.from_numpy(images)))
    z = torch.randn(40, 4, generator=torch.Generator().manual_seed(123))
    fake = feature_statistics(detect(detector, to_uint8_tensor(ConstantGenerator()(z))))
    assert fid == pytest.approx(frechet_distance(*real, *fake), rel=1e-9)


def test_fid_refuses_a_non_torchscript_file(tmp_path):
    from creps.errors import CrepsError

    bad = tmp_path / "inception.pkl"
    bad.write_bytes(b"not a model")
    with pytest.raises(CrepsError, match="TorchScript"):
        FidMetric(str(bad), np.zeros((4, 3, 8, 8), np.uint8), 4, torch.device("cpu"))
