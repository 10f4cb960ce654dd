"""``beyond-attention evaluate``: top-1, top-5 and per-class accuracy of a checkpoint.

The checkpoint's metadata names the model, its classes, input size and normalisation and
where the run validated, so the checkpoint alone is enough: ``--data``, ``--split``,
``--dataset`` and ``--img-size`` default to the run's. Given ``--model`` too, a mismatch is
an error naming the two models; data with other class names (or the same in another order)
is refused with the positions that differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..data.find import DATASET_NAMES
from ..tables import format_table
from ..train.evaluate import evaluate_checkpoint


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``evaluate`` command's flags."""
    p.add_argument("--checkpoint", required=True, metavar="FILE",
                   help="model weights (.safetensors), e.g. runs/NAME/best.safetensors")
    p.add_argument("--model", default=None,
                   help="registered model name (default: the one recorded in the checkpoint)")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="dataset path (default: the run's, if it still exists; then "
                        "$BEYOND_ATTENTION_DATA, then standard places)")
    p.add_argument("--dataset", default="auto", choices=DATASET_NAMES,
                   help="dataset kind/name (default: the run's with its data, else 'auto')")
    p.add_argument("--split", default=None,
                   help="split to evaluate (default: the run's validation split, else 'test')")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="evaluate a fixed random subset of N images")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", nargs="?", const="auto", default="off",
                   choices=["off", "auto", "bf16", "fp16"])
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--img-size", type=int, default=None,
                   help="decode an image folder of mixed sizes at this size (default: the "
                        "run's --img-size)")
    p.add_argument("--download", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def report(result: dict[str, Any]) -> str:
    """The result as text: a summary line and a table of per-class top-1."""
    head = (f"{result['model']} on {result['dataset']} {result['split']} "
            f"({result['count']} images): top-1 {result['top1']:.2f}%  "
            f"top-5 {result['top5']:.2f}%  loss {result['loss']:.4f}")
    rows = [[cls, "n/a" if acc is None else f"{acc:.2f}%"]
            for cls, acc in result["per_class"].items()]
    return head + "\n" + format_table(["class", "top-1"], rows)


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
    print(report(result))
    return 0
