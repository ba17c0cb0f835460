"""Losses and regularisers against closed forms."""

import math

import torch

from creps.train.loss import discriminator_loss, generator_loss, path_lengths, r1_penalty


def test_logistic_losses():
    fake = torch.tensor([[0.0], [2.0], [-3.0]])
    real = torch.tensor([[1.0], [-1.0], [0.5]])
    sig = torch.sigmoid
    assert torch.allclose(generator_loss(fake), -torch.log(sig(fake)).flatten())
    assert torch.allclose(discriminator_loss(fake, real), (-torch.log(1 - sig(fake)) - torch.log(sig(real))).flatten())


def test_r1_penalty_of_a_quadratic_discriminator():
    """D(x) = sum(a * x^2) per sample: grad = 2 a x, penalty = sum(4 a^2 x^2)."""
    a = torch.randn(3, 4, 5)
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    logits = (a * x.square()).sum(dim=(1, 2, 3)).unsqueeze(1)
    penalty = r1_penalty(logits, x)
    assert torch.allclose(penalty, (4 * a.square() * x.square()).sum(dim=(1, 2, 3)), rtol=1e-5)
    penalty.sum().backward()  # differentiable (create_graph), as the lazy R1 step needs
    assert x.grad is not None


class LinearG(torch.nn.Module):
    """ws = z repeated; img = sum_k ws[:, k] @ M_k: path length is |sum_k M_k y| / sqrt(K)."""

    def __init__(self, num_ws=3, w_dim=4, res=5):
        super().__init__()
        self.M = torch.nn.Parameter(torch.randn(num_ws, w_dim, 3 * res * res))
        self.num_ws, self.res = num_ws, res
        self.mapping = lambda z: z.unsqueeze(1).repeat(1, num_ws, 1)

    def synthesis(self, ws):
        return torch.einsum("nkw,kwp->np", ws, self.M).reshape(len(ws), 3, self.res, self.res)


def test_path_lengths_of_a_linear_generator():
    G = LinearG()
    z = torch.randn(2, 4, requires_grad=True)  # in training, ws depend on the mapping's parameters
    noise = torch.randn(2, 3, 5, 5)
    lengths = path_lengths(G, z, noise)
    y = noise.reshape(2, -1) / math.sqrt(25)  # (N, P)
    grads = torch.einsum("kwp,np->nkw", G.M, y)  # d(img . y)/d ws[k]
    expected = grads.square().sum(dim=2).mean(dim=1).sqrt()
    assert torch.allclose(lengths, expected, rtol=1e-5)
    lengths.sum().backward()
    assert G.M.grad is not None and G.M.grad.abs().sum() > 0
