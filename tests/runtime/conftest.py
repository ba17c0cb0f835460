"""The tiny bundle the package ships (creps/data/tiny/, written by tests/make_tiny_bundle.py),
and, where PyTorch is installed, the generator it was exported from: no export here, so these
tests run with numpy and ONNX Runtime only."""

from __future__ import annotations

import shutil

import pytest

from creps.runtime.bundle import read_bundle
from creps.runtime.default import tiny_bundle as shipped_tiny_bundle


@pytest.fixture(scope="session")
def tiny_generator():
    pytest.importorskip("torch", reason="needs PyTorch (the generator of the tiny bundle)")
    from make_tiny_bundle import tiny_generator

    return tiny_generator()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """One copy of the shipped bundle for the whole session, read only: a test that edits a
    bundle or adds engines copies this one into its own tmp_path first. Checked at the end."""
    copy = tmp_path_factory.mktemp("bundle") / "tiny"
    shutil.copytree(shipped_tiny_bundle(), copy)
    files = sorted(p.name for p in copy.iterdir())
    yield copy
    assert sorted(p.name for p in copy.iterdir()) == files, "a test wrote into the shared tiny bundle; copy it first"
    read_bundle(copy)  # every file still matches the manifest
