"""The state-dict keys and shapes of every registered model stay as they are.

``state_dict_keys.json`` records, for every registered model built at its default
configuration (and for the ViT baseline with each token mixer), each state-dict key with
its shape. Models are built on the meta device, so even the large ones cost nothing.
Checkpoints written by one version of the library load into the next only while this
holds. A deliberate change regenerates the file::

    python tests/models/test_state_dict_keys.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from beyond_attention import create_model, list_models
from beyond_attention.layers import MIXER_NAMES

FIXTURE = Path(__file__).with_name("state_dict_keys.json")
MIXER_BASE = "vit_tiny_cifar"


def _variants() -> dict[str, tuple[str, dict]]:
    """Fixture entry -> (model name, create_model kwargs)."""
    out: dict[str, tuple[str, dict]] = {name: (name, {}) for name in list_models()}
    for mixer in MIXER_NAMES:
        out[f"{MIXER_BASE}[mixer={mixer}]"] = (MIXER_BASE, {"mixer": mixer})
    return out


def _keys_and_shapes(name: str, kwargs: dict) -> dict[str, str]:
    """State-dict key -> shape written as "d0xd1x..." ("" for a scalar), in order."""
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    return {k: "x".join(map(str, v.shape)) for k, v in model.state_dict().items()}


def _load() -> dict[str, dict[str, str]]:
    return json.loads(FIXTURE.read_text())


@pytest.mark.parametrize("entry", sorted(_variants()))
def test_state_dict_keys_and_shapes_unchanged(entry: str) -> None:
    recorded = _load()
    name, kwargs = _variants()[entry]
    if entry not in recorded:
        pytest.fail(f"{entry} is not in {FIXTURE.name}; regenerate it for a new model")
    got = _keys_and_shapes(name, kwargs)
    want = recorded[entry]
    assert list(got) == list(want), (
        f"{entry}: keys differ: missing {sorted(set(want) - set(got))[:5]}, "
        f"new {sorted(set(got) - set(want))[:5]}"
    )
    bad = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not bad, f"{entry}: shapes differ (got, recorded): {dict(list(bad.items())[:5])}"


def test_fixture_names_are_registered() -> None:
    """No recorded entry is left over from a model that was removed or renamed."""
    assert sorted(_load()) == sorted(_variants())


if __name__ == "__main__":  # regenerate the fixture
    table = {entry: _keys_and_shapes(*spec) for entry, spec in sorted(_variants().items())}
    from beyond_attention.io import atomic_write_bytes

    atomic_write_bytes(FIXTURE, (json.dumps(table, indent=1) + "\n").encode())
    print(f"wrote {len(table)} entries to {FIXTURE}", file=sys.stderr)
