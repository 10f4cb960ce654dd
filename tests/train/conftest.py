"""Fixtures for the engine tests: a tiny registered net and the shared Fashion-MNIST."""

from __future__ import annotations

import pytest
import tiny_model


@pytest.fixture
def tiny_net():
    """Register the tiny test nets for one test, then remove them from the registry."""
    tiny_model.register()
    yield tiny_model.NAME
    tiny_model.unregister()


@pytest.fixture(scope="session")
def fashion_dir():
    """The shared Fashion-MNIST IDX folder (skips when the shared data is absent)."""
    if not (tiny_model.FASHION / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"shared Fashion-MNIST not found at {tiny_model.FASHION}")
    return tiny_model.FASHION
