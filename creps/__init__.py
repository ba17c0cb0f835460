"""creps: CREPS generators from a PyTorch checkpoint to fast images of any size.

`creps.Generator` and `creps.load_generator` need PyTorch and are imported on first use,
so that `import creps.runtime` works on a device without it.
"""

__version__ = "0.1.0"
__all__ = ["Generator", "GeneratorConfig", "load_generator", "save_checkpoint", "__version__"]


def __getattr__(name):
    if name in ("Generator", "GeneratorConfig"):
        from creps import model

        return getattr(model, name)
    if name in ("load_generator", "save_checkpoint"):
        from creps import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'creps' has no attribute {name!r}")
