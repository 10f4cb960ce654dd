"""Top-1, top-5 and per-class accuracy of a saved checkpoint: :func:`evaluate_checkpoint`.

The checkpoint is a safetensors file of model weights (``best.safetensors`` or
``last.safetensors`` of a training run); the metadata stored with it names the model, its
classes, input size and normalisation, so ``--model`` may be left out. Given both, a
mismatch is an error that names the two models. The ``evaluate`` command
(:mod:`beyond_attention.commands.evaluate`) is a thin layer over it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data import BatchLoader, Normalize, find_dataset
from . import distributed as D
from .checkpoint import (
    CheckpointError,
    check_model_name,
    load_safetensors,
    load_weights,
    parse_metadata,
)
from .engine import amp_dtype, build_model, evaluate, norm_stats


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | Path | None = None,
    split: str = "test",
    model: str | None = None,
    dataset: str = "auto",
    batch_size: int = 256,
    limit: int | None = None,
    device: str = "auto",
    amp: str = "off",
    cache_dir: str | None = None,
    download: bool = False,
    img_size: int | None = None,
) -> dict[str, Any]:
    """Evaluate a weights file on one split.

    ``img_size`` is for image folders of mixed sizes: decode them resized to this size, as
    the training run did with ``--img-size``. Other arguments as the command's flags.

    Returns:
        ``{"model", "checkpoint", "dataset", "split", "count", "loss", "top1", "top5",
        "per_class": {class name: top-1 %}}``.
    """
    _, raw_meta = load_safetensors(checkpoint)
    meta = parse_metadata(raw_meta)
    name = model or meta.get("model")
    if name is None:
        raise CheckpointError(f"{checkpoint} does not record its model: pass --model NAME")
    check_model_name(name, meta.get("model"), checkpoint)
    source = find_dataset(data, dataset, download, cache_dir)
    ds = source.load(split, img_size=img_size, cache_dir=cache_dir).subset(limit)
    size = tuple(meta["img_size"]) if meta.get("img_size") else ds.image_size
    num_classes = int(meta.get("num_classes", ds.num_classes))
    if num_classes != ds.num_classes:
        raise CheckpointError(
            f"{checkpoint} classifies {num_classes} classes but {source.path} split {split!r} "
            f"has {ds.num_classes}"
        )
    in_chans = int(meta.get("in_chans", ds.channels))
    if in_chans != ds.channels:
        raise CheckpointError(
            f"{checkpoint} expects {in_chans}-channel images; {source.path} has {ds.channels}"
        )
    dev = D.resolve_device(device)
    net = build_model(name, num_classes, in_chans, size)
    load_weights(net, checkpoint, name)
    net.to(dev)
    if meta.get("mean") and meta.get("std"):
        mean, std = tuple(meta["mean"]), tuple(meta["std"])
    else:
        mean, std = norm_stats(net, ds)
    normalize = Normalize(mean, std, size).to(dev)
    loader = BatchLoader(ds, batch_size)
    result = evaluate(net, loader, normalize, dev, num_classes, amp_dtype(amp, dev))
    classes = ds.classes
    return {
        "model": name, "checkpoint": str(checkpoint), "dataset": ds.name, "split": split,
        "count": result["count"], "loss": result["loss"], "top1": result["top1"],
        "top5": result["top5"],
        "per_class": dict(zip(classes, result["per_class"], strict=True)),
    }
