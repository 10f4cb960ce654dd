"""Fixtures of the deploy tests."""

from __future__ import annotations

import pytest
from deploy_helpers import write_checkpoint


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "best.safetensors"
    return path, write_checkpoint(path)
