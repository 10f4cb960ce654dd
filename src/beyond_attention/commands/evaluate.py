"""``beyond-attention evaluate``: top-1, top-5 and per-class accuracy of a checkpoint; for
a segmentation or point-cloud checkpoint, its task's metrics (mIoU and pixel accuracy;
overall and mean class accuracy; instance and class mIoU) and the per-class table.

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
    p.add_argument("checkpoint_file", nargs="?", default=None, metavar="CHECKPOINT",
                   help="model weights (.safetensors), e.g. runs/NAME/best.safetensors "
                        "(or pass --checkpoint)")
    p.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="the same as the positional CHECKPOINT")
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
    p.add_argument("--no-cache", action="store_true",
                   help="decode an image folder afresh, without reading or writing the decode "
                        "cache")
    p.add_argument("--eval-mode", default=None, choices=["whole", "slide"],
                   help="segmentation: whole images or sliding crop-size windows (default: "
                        "the run's)")
    p.add_argument("--num-points", type=int, default=None, metavar="N",
                   help="point clouds: points per cloud (default: the run's)")
    p.add_argument("--download", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


#: The metric names shown per task, and the per-class column.
_TASK_SHOWN = {
    "semantic_segmentation": ((("miou", "mIoU"), ("pixel_accuracy", "pixel accuracy"),
                               ("mean_class_accuracy", "mean class accuracy")), "IoU"),
    "pointcloud_classification": ((("overall_accuracy", "OA"),
                                   ("mean_class_accuracy", "mAcc")), "accuracy"),
    "pointcloud_part_segmentation": ((("instance_miou", "instance mIoU"),
                                      ("class_miou", "class mIoU"),
                                      ("point_accuracy", "point accuracy")), "mIoU"),
}


def report(result: dict[str, Any]) -> str:
    """The result as text: a summary line and a table of per-class top-1 (or the task's
    per-class metric)."""
    if result.get("task") in _TASK_SHOWN:
        shown, column = _TASK_SHOWN[result["task"]]
        metrics = "  ".join(f"{label} {result[k]:.2f}%" for k, label in shown)
        loss = "n/a" if result["loss"] is None else f"{result['loss']:.4f}"
        head = (f"{result['model']} on {result['dataset']} {result['split']} "
                f"({result['count']} samples): {metrics}  loss {loss}")
        rows = [[name, "n/a" if v is None else f"{v:.2f}%"]
                for name, v in result["per_class"].items()]
        return head + "\n" + format_table(["class", column], rows)
    head = (f"{result['model']} on {result['dataset']} {result['split']} "
            f"({result['count']} images): top-1 {result['top1']:.2f}%  "
            f"top-5 {result['top5']:.2f}%  loss {result['loss']:.4f}")
    rows = [[cls, "n/a" if acc is None else f"{acc:.2f}%"]
            for cls, acc in result["per_class"].items()]
    return head + "\n" + format_table(["class", "top-1"], rows)


def run(args: argparse.Namespace) -> int:
    """Run the ``evaluate`` command."""
    if (args.checkpoint is None) == (args.checkpoint_file is None):
        raise ValueError("evaluate needs one checkpoint: pass CHECKPOINT or --checkpoint FILE")
    result = evaluate_checkpoint(
        args.checkpoint or args.checkpoint_file, args.data, args.split, args.model,
        args.dataset, args.batch_size, args.limit, args.device, args.amp, args.cache_dir,
        args.download, args.img_size, no_cache=args.no_cache, eval_mode=args.eval_mode,
        num_points=args.num_points,
    )
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    print(report(result))
    return 0
