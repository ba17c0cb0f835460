"""Small generators with every tensor randomised, so that no bias or average hides a bug."""

from __future__ import annotations

import torch

from creps.model import Generator, GeneratorConfig

TINY = GeneratorConfig(z_dim=32, w_dim=32, img_resolution=16, mapping_layers=2, channel_base=512,
                       channel_max=32, rank=4)
MID = GeneratorConfig(z_dim=128, w_dim=128, img_resolution=64, mapping_layers=4, channel_base=8192,
                      channel_max=256)
# The three linear contributions to the image: scaling them scales the image exactly.
IMAGE_OUTPUTS = ("synthesis.decoder_img", "synthesis.block0.tores", "synthesis.block1.tores")


def random_generator(cfg: GeneratorConfig = TINY, seed: int = 0, output_std: float | None = 0.5) -> Generator:
    """A generator whose biases, affine biases and w_avg are all non-trivial (float32, eval).

    Random weights give images of std ~5-50; with `output_std` the image layers are scaled
    so that images have about that std, like a trained model's (~0.5), which makes an
    absolute error bar mean what it means for a real checkpoint.
    """
    torch.manual_seed(seed)
    G = Generator(cfg)
    gen = torch.Generator().manual_seed(seed + 1)
    state = G.state_dict()
    with torch.no_grad():
        for name, tensor in state.items():
            if name.endswith(".bias") or name.endswith("w_avg"):
                tensor.add_(0.2 * torch.randn(tensor.shape, generator=gen))
        if output_std is not None:
            z = torch.randn(4, cfg.z_dim, generator=gen)
            k = output_std / G(z, height=16, width=16).std(dim=(1, 2, 3)).mean().item()  # per-image spread
            for prefix in IMAGE_OUTPUTS:
                state[f"{prefix}.weight"].mul_(k)
                state[f"{prefix}.bias"].mul_(k)
    return G.eval().requires_grad_(False)
