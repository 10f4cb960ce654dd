"""``beyond-attention predict CHECKPOINT IMAGE...``: top-k classes of image files.

The checkpoint alone rebuilds the model and its validation preprocessing
(:mod:`beyond_attention.inference`); images are files, folders (searched recursively) or
glob patterns. Every image is decoded before the first result is printed, so an
unreadable one is an error naming it and nothing is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..tables import format_table


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``predict`` command's flags."""
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="weights (.safetensors), a run's NAME.json, or its directory")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, folders or glob patterns (quote them)")
    p.add_argument("--model", default=None,
                   help="registered model name (default: the one recorded in the checkpoint)")
    p.add_argument("--topk", type=int, default=5, help="classes per image")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def report(rows: list[dict[str, Any]]) -> str:
    """One table row per image and rank: image, rank, class, probability."""
    table = [[r["image"] if i == 0 else "", str(i + 1), t["class"], f"{100 * t['prob']:.2f}%"]
             for r in rows for i, t in enumerate(r["top"])]
    return format_table(["image", "rank", "class", "probability"], table)


def run(args: argparse.Namespace) -> int:
    """Run the ``predict`` command."""
    from ..inference import find_images, load_for_inference, predict
    from ..train import distributed as D

    if args.topk < 1 or args.batch_size < 1:
        raise ValueError(f"--topk and --batch-size must be >= 1, got {args.topk} and "
                         f"{args.batch_size}")
    model, meta = load_for_inference(args.checkpoint, args.model,
                                     D.resolve_device(args.device))
    task = model.config.task
    if task != "image_classification":
        raise ValueError(f"predict ranks the classes of image-classification checkpoints; "
                         f"{meta['weights']} is a {task} checkpoint (`beyond-attention "
                         f"evaluate CHECKPOINT --data PATH` gives its metrics)")
    paths = find_images(args.images)
    rows = predict(model, meta, paths, args.topk, args.batch_size)
    if args.json:
        json.dump({"model": meta["model"], "checkpoint": meta["weights"], "predictions": rows},
                  sys.stdout, indent=2)
        print()
    else:
        print(report(rows))
    return 0
