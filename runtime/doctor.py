"""creps-doctor's bundles: the tiny bundle the package ships (creps/data/tiny/)."""

from __future__ import annotations

from pathlib import Path


def tiny_bundle() -> Path:
    """The tiny bundle the package ships (tests/make_tiny_bundle.py writes it): the torch-free
    tests and creps-doctor run on it."""
    import creps

    return Path(creps.__file__).resolve().parent / "data" / "tiny"
