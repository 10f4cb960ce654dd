"""Per-model training defaults: fill the settings a run leaves unset from the model's recipe.

A model's :class:`~beyond_attention.models._registry.ModelConfig` may carry a ``recipe``
(learning rate, weight decay, warm-up, stochastic depth, label smoothing, batch size,
random-crop padding, flip probability, channels-last memory format, mixed precision) chosen
for short CPU budgets (the measurements are in ``benchmarks/recipes.md``).
:class:`~beyond_attention.train.config.TrainConfig` leaves those settings None unless a
flag (or the caller) sets them; at the start of a run :func:`resolve` takes each unset one
from the recipe, else from :data:`FALLBACK`. An explicit value always wins. A resumed run
takes each unset one from the configuration it was saved with first, so that it continues
the saved optimisation even when the recipe has changed since it started. The flip
probability is decided with the data (:func:`beyond_attention.data.augment.default_hflip`),
so it is resolved later.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .config import TrainConfig

__all__ = ["FALLBACK", "model_recipe", "resolve"]

#: The value of each recipe setting when neither a flag nor the model's recipe gives one.
FALLBACK: dict[str, float | int | bool | str] = {
    "lr": 2e-3, "weight_decay": 0.05, "warmup": 0.2, "drop_path": 0.0, "label_smoothing": 0.1,
    "batch_size": 128, "crop_padding": 4, "channels_last": False, "amp": "off"}


def model_recipe(name: str) -> dict[str, Any]:
    """The registered recipe of model ``name`` (empty when it has none)."""
    import beyond_attention.models  # noqa: F401  (registers the model families)
    from beyond_attention.models._registry import get_model_config

    return dict(get_model_config(name).recipe)


def resolve(cfg: TrainConfig, saved: dict[str, Any] | None = None) -> TrainConfig:
    """``cfg`` with every unset recipe setting filled (``hflip`` stays as given).

    ``saved``: the configuration recorded by the run being resumed (``last.json``'s
    ``config``); its values come before the recipe's.
    """
    recipe = model_recipe(cfg.model)
    saved = saved or {}
    values = {key: saved[key] if saved.get(key) is not None else recipe.get(key, fallback)
              for key, fallback in FALLBACK.items() if getattr(cfg, key) is None}
    return dataclasses.replace(cfg, **values)
