"""What the viz commands look at: a model (from weights or by name) and images for it.

:func:`load_model` is the one place that turns a checkpoint into a model ready to run;
it reads the weights' metadata (model name, classes, input size, mean/std) and, when the
training run's record (``last.json`` or ``NAME.json`` beside the weights) is there, the
model keywords the run used (``--model-arg``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from ..inference import build_recorded_model
from ..train.checkpoint import (
    CheckpointError,
    check_model_name,
    load_safetensors,
    load_weights,
    parse_metadata,
)

__all__ = ["LoadedModel", "load_images", "load_model", "load_split", "normalize"]


@dataclass
class LoadedModel:
    """A model in eval mode with what is needed to feed it.

    Attributes:
        model: the network (eval mode, CPU).
        name: its registered name.
        img_size: input (H, W).
        in_chans: input channels.
        mean, std: per-channel input normalisation.
        classes: class names (empty when unknown).
        source: the checkpoint path, or ``"random weights"``.
        model_kwargs: keywords passed to ``create_model`` beyond the standard ones.
    """

    model: nn.Module
    name: str
    img_size: tuple[int, int]
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str] = field(default_factory=list)
    source: str = "random weights"
    model_kwargs: dict[str, Any] = field(default_factory=dict)


def _run_record_kwargs(weights: Path) -> dict[str, Any]:
    """Model keywords from the training record beside ``weights`` ({} if none)."""
    stem = weights.name[: -len(".safetensors")] if weights.name.endswith(".safetensors") else ""
    for cand in (weights.with_name(f"{stem}.json"), weights.with_name("last.json")):
        if cand.is_file():
            try:
                cfg = json.loads(cand.read_text()).get("config", {})
            except ValueError:
                continue
            kwargs = cfg.get("model_kwargs") if isinstance(cfg, dict) else None
            if isinstance(kwargs, dict):
                return dict(kwargs)
    return {}


def _config(name: str) -> Any:
    import beyond_attention.models  # noqa: F401  (registers the families)
    from beyond_attention.models import get_model_config

    return get_model_config(name)


def load_model(
    checkpoint: str | Path | None = None,
    model: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    img_size: int | None = None,
    seed: int = 0,
) -> LoadedModel:
    """A model from a weights file, or a registered model with random weights.

    Args:
        checkpoint: ``.safetensors`` weights written by training (``best`` / ``last``).
        model: registered name; with a checkpoint it must match the one recorded there.
        model_kwargs: extra ``create_model`` keywords (override the training record's).
        img_size: input size for a model built without a checkpoint (default: its config).
        seed: seed of the random weights when there is no checkpoint.

    Raises:
        CheckpointError: the checkpoint is unreadable, names another model, or its tensors
            do not fit the model it names.
        ValueError: neither ``checkpoint`` nor ``model`` is given, or the name is unknown.
    """
    from beyond_attention.models import create_model

    if checkpoint is None:
        if model is None:
            raise ValueError("give a checkpoint (--checkpoint FILE) or a model name (--model)")
        cfg = _config(model)
        size = img_size or int(cfg.input_size[-1])
        torch.manual_seed(seed)
        net = create_model(model, img_size=size, **(model_kwargs or {}))
        return LoadedModel(
            net.eval(), model, (size, size), int(cfg.input_size[0]), tuple(cfg.mean),
            tuple(cfg.std), [], "random weights", dict(model_kwargs or {}),
        )
    path = Path(checkpoint)
    _, raw = load_safetensors(path)
    meta = parse_metadata(raw)
    name = model or meta.get("model")
    if name is None:
        raise CheckpointError(f"{path} does not record its model: pass --model NAME")
    check_model_name(name, meta.get("model"), path)
    kwargs = {**_run_record_kwargs(path), **(model_kwargs or {})}
    cfg = _config(name)
    size = tuple(meta.get("img_size") or cfg.input_size[-2:])
    in_chans = int(meta.get("in_chans", cfg.input_size[0]))
    num_classes = int(meta.get("num_classes", cfg.num_classes))
    net = build_recorded_model(name, {**meta, "model_kwargs": kwargs}, path,
                               num_classes=num_classes, in_chans=in_chans, img_size=size)
    load_weights(net, path, name)
    mean = tuple(meta.get("mean") or cfg.mean)
    std = tuple(meta.get("std") or cfg.std)
    return LoadedModel(net.eval(), name, (int(size[0]), int(size[1])), in_chans, mean, std,
                       list(meta.get("classes") or []), str(path), kwargs)


def load_images(paths: list[str | Path], size: tuple[int, int], channels: int) -> torch.Tensor:
    """Image files -> uint8 (B, C, H, W) at the model's size (bilinear resize).

    Raises:
        ValueError: a path is missing or is not an image file (named in the message).
    """
    out = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise ValueError(f"image file {p} does not exist")
        try:
            with Image.open(p) as im:
                im = im.convert("L" if channels == 1 else "RGB")
                im = im.resize((size[1], size[0]), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{p} is not an image file that can be read ({e})") from None
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        out.append(torch.from_numpy(np.ascontiguousarray(arr)))
    if not out:
        raise ValueError("no image given: pass image files or a dataset (--data)")
    return torch.stack(out)


def load_split(data: str | Path | None, split: str, count: int, channels: int,
               size: tuple[int, int], seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """``count`` images of a dataset split, a fixed random choice: uint8 (B, C, H, W) and
    their class names."""
    from ..data import load_dataset
    from ..data.augment import to_float

    ds = load_dataset(data, split)
    if ds.channels != channels:
        raise ValueError(f"the model expects {channels}-channel images; the data has {ds.channels}")
    gen = np.random.default_rng(seed)
    idx = np.sort(gen.choice(len(ds.labels), size=min(count, len(ds.labels)), replace=False))
    images = torch.from_numpy(ds.images[idx])
    if tuple(images.shape[-2:]) != tuple(size):
        images = (to_float(images, size) * 255).round().clamp(0, 255).to(torch.uint8)
    return images, [ds.classes[i] for i in ds.labels[idx]]


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
              ) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 ``(x / 255 - mean) / std``."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images.float() / 255.0 - m) / s
