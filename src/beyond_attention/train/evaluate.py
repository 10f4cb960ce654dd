"""``beyond-attention evaluate``: top-1, top-5 and per-class accuracy of a checkpoint.

The checkpoint is a safetensors file of model weights (``best.safetensors`` or
``last.safetensors`` of a training run); the metadata stored with it names the model, its
classes, input size and normalisation, so ``--model`` may be left out. Given both, a
mismatch is an error that names the two models.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..data import BatchLoader, Normalize, find_dataset
from ..data.find import DATASET_NAMES
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``evaluate`` command's flags."""
    p.add_argument("--checkpoint", required=True, metavar="FILE",
                   help="model weights (.safetensors), e.g. runs/NAME/best.safetensors")
    p.add_argument("--model", default=None,
                   help="registered model name (default: the one recorded in the checkpoint)")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="dataset path (default: $BEYOND_ATTENTION_DATA, then standard places)")
    p.add_argument("--dataset", default="auto", choices=DATASET_NAMES)
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="evaluate a fixed random subset of N images")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", nargs="?", const="auto", default="off",
                   choices=["off", "auto", "bf16", "fp16"])
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--img-size", type=int, default=None,
                   help="decode an image folder of mixed sizes at this size (as in training)")
    p.add_argument("--download", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    """Run the ``evaluate`` command."""
    result = evaluate_checkpoint(
        args.checkpoint, args.data, args.split, args.model, args.dataset, args.batch_size,
        args.limit, args.device, args.amp, args.cache_dir, args.download, args.img_size,
    )
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    print(f"{result['model']} on {result['dataset']} {result['split']} "
          f"({result['count']} images): top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  "
          f"loss {result['loss']:.4f}")
    width = max(len(c) for c in result["per_class"])
    for cls, acc in result["per_class"].items():
        shown = "   n/a" if acc is None else f"{acc:6.2f}%"
        print(f"  {cls:<{width}}  {shown}")
    return 0

