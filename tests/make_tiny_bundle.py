"""Write the tiny bundle the package ships (creps/data/tiny/): `python tests/make_tiny_bundle.py`.

The torch-free tests (tests/runtime, tests/trt) and creps-doctor run on it, so a device
without PyTorch (JetPack) runs them. It is what `creps-export --onnx` writes (export_bundle,
parity check against PyTorch included) for `tiny_generator()`: every tensor random
(tests/tiny_models.py), a fixed seed, images of std ~0.5 as a trained model's are, so that
the precision bars mean what they mean for a real checkpoint. 8 biline channels instead of
the published 32 and at most 16 line channels keep the graphs at ~450 KB; 32x32 gives three
blocks. tests/runtime/test_tiny_bundle.py checks that the shipped copy still matches what the
exporter writes; run this script again (and commit the folder) when it does not.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tiny_models, when run as a script

from tiny_models import random_generator  # noqa: E402

from creps.export import export_bundle  # noqa: E402
from creps.model import Generator, GeneratorConfig  # noqa: E402
from creps.runtime.default import tiny_bundle  # noqa: E402

CONFIG = GeneratorConfig(z_dim=32, w_dim=32, img_resolution=32, mapping_layers=2, channel_base=256, channel_max=16,
                         biline_channels=8, rank=8)
SEED = 5


def tiny_generator() -> Generator:
    """The generator the shipped tiny bundle was exported from."""
    return random_generator(CONFIG, seed=SEED)


def write(out: Path, verify: bool = True) -> Path:
    return export_bundle(tiny_generator(), out, verify=verify, force=True)


if __name__ == "__main__":
    print(f"wrote {write(tiny_bundle())}")
