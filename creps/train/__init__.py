"""creps.train: the original training recipe (StyleGAN2-ADA loop) for CREPS generators.

`train(TrainOptions(data=..., outdir=..., ...))` runs or continues a run; `creps-train`
is its command line.
"""

from creps.train.loop import TrainOptions, train

__all__ = ["TrainOptions", "train"]
