"""Top-1, top-5 and per-class accuracy of a saved checkpoint: :func:`evaluate_checkpoint`.

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
from . import distributed as D
from .checkpoint import CheckpointError, check_model_name
from .engine import amp_dtype, evaluate

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
) -> dict[str, Any]:
    """Evaluate a weights file on one split.

    ``data``, ``split``, ``dataset`` and ``img_size`` default to what the checkpoint
    records (:func:`evaluation_defaults`); ``img_size`` is for image folders of mixed
    sizes: decode them resized to this size, as the training run did with ``--img-size``.
    Other arguments as the command's flags.

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
    data, split, dataset, img_size = evaluation_defaults(recorded, data, split, dataset,
                                                         img_size)
    source = find_dataset(data, dataset, download, cache_dir)
    ds = source.load(split, img_size=img_size, cache_dir=cache_dir).subset(limit)
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
