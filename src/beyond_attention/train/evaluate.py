"""Top-1, top-5 and per-class accuracy of a saved checkpoint: :func:`evaluate_checkpoint`;
for a segmentation or point-cloud checkpoint (its metadata records the task) the task's
metrics instead (:func:`evaluate_task_checkpoint`).

The checkpoint is a safetensors file of model weights (``best.safetensors`` or
``last.safetensors`` of a training run); the metadata stored with it names the model, its
classes, input size and normalisation, and where the run validated, so by default it is
evaluated on that data and split with nothing else given. Given a model too, a mismatch is
an error that names the two models; data whose class names differ from the checkpoint's
(other names, or the same names in another order) is refused, since every score would be
reported under the wrong name. The ``evaluate`` command
(:mod:`beyond_attention.commands.evaluate`) is a thin layer over it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data import BatchLoader, Normalize, find_dataset
from ..data.find import PROCEDURAL_POINTS
from . import distributed as D
from . import task_data as TD
from .checkpoint import CheckpointError, check_model_name
from .engine import amp_dtype, evaluate
from .tasks import ImageClassification, make_task

#: The split evaluated when neither the caller nor the checkpoint names one.
FALLBACK_SPLIT = "test"


def check_class_names(expected: list[str], found: list[str], checkpoint: str | Path,
                      where: str) -> None:
    """Raise :class:`CheckpointError` unless ``found`` (the data's class names) equals
    ``expected`` (the checkpoint's) in order; the message lists the positions that differ."""
    if list(expected) == list(found):
        return
    if len(expected) != len(found):
        detail = f"{len(expected)} classes in the checkpoint, {len(found)} in the data"
    else:
        pairs = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(expected, found,
                                                                        strict=True)) if a != b]
        same_set = sorted(expected) == sorted(found)
        detail = ("same names in another order; " if same_set else "") + "index: checkpoint " \
            "vs data: " + ", ".join(pairs[:10]) + (" ..." if len(pairs) > 10 else "")
    raise CheckpointError(
        f"{checkpoint} was trained on classes {list(expected)} but {where} has "
        f"{list(found)} ({detail}); evaluate on data with the run's classes"
    )


def evaluation_defaults(meta: dict[str, Any], data: str | Path | None, split: str | None,
                        dataset: str, img_size: int | None
                        ) -> tuple[str | Path | None, str, str, int | None]:
    """``(data, split, dataset, img_size)``: each as given, else as the run recorded it
    (its data path when it still exists, its validation split, dataset and decode size),
    else the general defaults (search for the data, split ``test``)."""
    if data is None and meta.get("data") and Path(meta["data"]).exists():
        data = meta["data"]
        if dataset == "auto" and meta.get("dataset"):
            dataset = meta["dataset"]
    if split is None:
        split = meta.get("val_split") or FALLBACK_SPLIT
    if img_size is None and meta.get("decode_size"):
        img_size = int(meta["decode_size"])
    return data, split, dataset, img_size


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | Path | None = None,
    split: str | None = None,
    model: str | None = None,
    dataset: str = "auto",
    batch_size: int = 256,
    limit: int | None = None,
    device: str = "auto",
    amp: str = "off",
    cache_dir: str | None = None,
    download: bool = False,
    img_size: int | None = None,
    no_cache: bool = False,
    eval_mode: str | None = None,
    num_points: int | None = None,
) -> dict[str, Any]:
    """Evaluate a weights file on one split.

    ``data``, ``split``, ``dataset`` and ``img_size`` default to what the checkpoint
    records (:func:`evaluation_defaults`); ``img_size`` is for image folders of mixed
    sizes: decode them resized to this size, as the training run did with ``--img-size``.
    ``no_cache`` decodes an image folder without the decode cache. A segmentation or
    point-cloud checkpoint goes to :func:`evaluate_task_checkpoint` (``eval_mode``,
    ``num_points``). Other arguments as the command's flags.

    Returns:
        ``{"model", "checkpoint", "dataset", "split", "count", "loss", "top1", "top5",
        "per_class": {class name: top-1 %}}``.

    Raises:
        CheckpointError: unreadable checkpoint, another model's weights, or data whose
            class count, class names or channels differ from the checkpoint's.
    """
    from ..inference import load_for_inference, read_metadata

    recorded = read_metadata(checkpoint)
    if (model or recorded["model"]) is None:
        raise CheckpointError(f"{checkpoint} does not record its model: pass --model NAME")
    if model is not None:
        check_model_name(model, recorded["model"], checkpoint)
    if recorded.get("task") not in (None, ImageClassification.name):
        return evaluate_task_checkpoint(checkpoint, recorded, data, split, dataset, batch_size,
                                        limit, device, amp, cache_dir, download, eval_mode,
                                        num_points)
    data, split, dataset, img_size = evaluation_defaults(recorded, data, split, dataset,
                                                         img_size)
    source = find_dataset(data, dataset, download, cache_dir)
    TD.check_task_data(ImageClassification.name, source, recorded["model"] or str(model))
    ds = source.load(split, img_size=img_size, cache_dir=cache_dir,
                     cache=not no_cache).subset(limit)
    num_classes = recorded["num_classes"]
    if num_classes is not None and int(num_classes) != ds.num_classes:
        raise CheckpointError(
            f"{checkpoint} classifies {num_classes} classes but {source.path} split {split!r} "
            f"has {ds.num_classes}"
        )
    if recorded["classes"] and ds.classes:
        check_class_names(recorded["classes"], ds.classes, checkpoint,
                          f"{source.path} split {split!r}")
    in_chans = recorded["in_chans"]
    if in_chans is not None and int(in_chans) != ds.channels:
        raise CheckpointError(
            f"{checkpoint} expects {in_chans}-channel images; {source.path} has {ds.channels}"
        )
    dev = D.resolve_device(device)
    net, meta = load_for_inference(checkpoint, model, dev)
    normalize = Normalize(tuple(meta["mean"]), tuple(meta["std"]),
                          tuple(meta["img_size"])).to(dev)
    loader = BatchLoader(ds, batch_size)
    result = evaluate(net, loader, normalize, dev, ds.num_classes, amp_dtype(amp, dev))
    return {
        "model": meta["model"], "checkpoint": str(checkpoint), "dataset": ds.name,
        "split": split, "count": result["count"], "loss": result["loss"],
        "top1": result["top1"], "top5": result["top5"],
        "per_class": dict(zip(ds.classes, result["per_class"], strict=True)),
    }


def evaluate_task_checkpoint(
    checkpoint: str | Path, recorded: dict[str, Any], data: str | Path | None, split: str | None,
    dataset: str, batch_size: int, limit: int | None, device: str, amp: str,
    cache_dir: str | None, download: bool, eval_mode: str | None, num_points: int | None,
) -> dict[str, Any]:
    """The task's metrics of a segmentation or point-cloud checkpoint on one split.

    Data, split, evaluation mode (segmentation) and points per cloud default to the run's
    record; the data must be of the checkpoint's task and carry its class (category) names.

    Returns:
        ``{"model", "task", "checkpoint", "dataset", "split", "count", "loss", the task's
        metrics (percent), "score", "per_class": {name: IoU / accuracy / category mIoU}}``.
    """
    from ..inference import load_for_inference

    task_name = recorded["task"]
    if data is None and recorded.get("data_kind") == "procedural" and dataset == "auto":
        dataset = PROCEDURAL_POINTS
    data, split, dataset, _ = evaluation_defaults(recorded, data, split, dataset, None)
    source = find_dataset(data, dataset, download, cache_dir)
    TD.check_task_data(task_name, source, recorded["model"])
    n_points = num_points or recorded.get("num_points")
    ds = TD.subset(TD.load_split(source, split, n_points), limit)
    part_seg = task_name == "pointcloud_part_segmentation"
    names = recorded.get("categories") if part_seg else recorded["classes"]
    if names:
        check_class_names(names, list(ds.classes), checkpoint, f"{source.path} split {split!r}")
    if part_seg and recorded.get("category_parts") not in (None, ds.category_parts):
        raise CheckpointError(f"{checkpoint} was trained on other part labels per category "
                              f"than {source.path} has")
    dev = D.resolve_device(device)
    net, meta = load_for_inference(checkpoint, recorded["model"], dev)
    num_classes = TD.model_outputs(task_name, ds)
    if num_classes != meta["num_classes"]:
        raise CheckpointError(f"{checkpoint} predicts {meta['num_classes']} labels but "
                              f"{source.path} split {split!r} has {num_classes}")
    task = make_task(task_name, **({"category_parts": ds.category_parts} if part_seg else {}))
    crop = recorded.get("crop_size")
    normalize = None
    if task_name == "semantic_segmentation":
        normalize = TD.seg_normalize(meta["mean"], meta["std"]).to(dev)
    result = TD.evaluate_task(
        net, task, ds, dev, batch_size=batch_size, num_classes=num_classes,
        dtype=amp_dtype(amp, dev), normalize=normalize,
        mode=eval_mode or recorded.get("eval_mode") or "whole",
        window=(crop, crop) if crop else None,
        num_points=n_points if task_name.startswith("pointcloud") else None)
    per_class = result.pop("per_class")
    shown = names or [str(i) for i in range(len(per_class))]
    return {
        "model": meta["model"], "task": task_name, "checkpoint": str(checkpoint),
        "dataset": ds.name, "split": split, **result, "score": task.score,
        "per_class": dict(zip(shown, per_class, strict=True)),
    }
