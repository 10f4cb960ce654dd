"""The data side of each task for the training loop: loading a split, device-ready
training batches, the running training metric, and evaluation through the task's meter.

Image classification keeps the engine's own path (:class:`ImageBatches`: uint8 batches
augmented on the device, soft targets under MixUp/CutMix). The other tasks
(:class:`TaskBatches`):

- ``semantic_segmentation``: every training sample goes through
  :class:`~beyond_attention.data.seg_augment.SegmentationAugment` (random scale, pad with
  the ignore label, crop to ``crop_size``, flip) with a generator seeded from
  ``(seed, epoch, sample index)``, so a resumed run draws the same crops; batches are
  ``(uint8 (B, 3, h, w), int64 (B, h, w))``, normalised on the device. Evaluation runs on
  whole images (any size, padded to a multiple of the output stride) or by sliding
  windows (:mod:`~beyond_attention.data.seg_inference`).
- ``pointcloud_classification``: ``(B, 3, N)`` float batches (the first N points of each
  cloud), PCT's scaling and translation on the device (``task.augment``).
- ``pointcloud_part_segmentation``: the same clouds with per-point part labels ``(B, N)``;
  the model is called as ``model(x, category)``.

A batch is ``(inputs, target)``: ``inputs`` the model's positional arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import BatchLoader, Normalize
from ..data.base import DatasetError
from ..data.find import KIND_NAMES, DataSource
from ..data.points import (
    PointCloudDataset,
    load_modelnet40_h5,
    load_modelnet_off,
    load_shapenet_part_h5,
)
from ..data.procedural_points import procedural_point_clouds
from ..data.seg_augment import SegmentationAugment, collate_segmentation
from ..data.seg_inference import sliding_window_inference, whole_image_inference
from ..data.segmentation import SegmentationDataset, load_mask_folder, load_voc
from . import distributed as D
from .tasks import Task, TaskMeter

__all__ = [
    "PROCEDURAL_SIZES",
    "ImageBatches",
    "SampleLoader",
    "TaskBatches",
    "check_task_data",
    "evaluate_task",
    "image_layout",
    "load_split",
    "model_outputs",
    "sample_seed",
    "subset",
    "task_loaders",
]

TaskDataset = SegmentationDataset | PointCloudDataset
Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor]

#: Clouds per split of the procedural point set (train seed 0, test seed 1).
PROCEDURAL_SIZES = {"train": 2000, "test": 500}
_PROCEDURAL_SEEDS = {"train": 0, "test": 1, "val": 1}


def check_task_data(task: str, source: DataSource, model: str) -> None:
    """Refuse data of another task than the model's, in one line."""
    if not source.serves(task):
        hint = " (or --dataset procedural-points)" if task.startswith("pointcloud") else ""
        raise DatasetError(
            f"model {model} does {task.replace('_', ' ')} but {source.path} is "
            f"{KIND_NAMES[source.kind]}; pass data of the model's task with --data{hint}")


def load_split(source: DataSource, split: str, num_points: int | None = None
               ) -> TaskDataset:
    """One split of a segmentation or point-cloud source (``num_points``: the size of the
    procedural clouds and of sampled OFF meshes)."""
    kind, root = source.kind, source.path
    if kind == "voc":
        return load_voc(root, split)
    if kind == "maskfolder":
        return load_mask_folder(root, None if split == "all" else split)
    if kind == "modelnet_h5":
        return load_modelnet40_h5(root, split)
    if kind == "modelnet_off":
        return load_modelnet_off(root, split, num_points or 1024)
    if kind == "shapenet_part_h5":
        return load_shapenet_part_h5(root, split)
    if kind == "procedural":
        if split not in _PROCEDURAL_SEEDS:
            raise DatasetError(f"the procedural point set has splits train and test, not "
                               f"{split!r}")
        n = PROCEDURAL_SIZES["train" if split == "train" else "test"]
        return procedural_point_clouds(n, num_points or 1024, seed=_PROCEDURAL_SEEDS[split],
                                       split=split)
    raise DatasetError(f"{root} is {KIND_NAMES[kind]}: not segmentation or point-cloud data")


def subset(data: TaskDataset, n: int | None, seed: int = 0) -> TaskDataset:
    """A fixed random subset of ``n`` samples in source order (as ``ImageDataset.subset``)."""
    if n is None or n >= len(data):
        return data
    if n <= 0:
        raise ValueError(f"subset size must be positive, got {n}")
    keep = np.sort(np.random.default_rng(seed).permutation(len(data))[:n])
    if isinstance(data, SegmentationDataset):
        return SegmentationDataset([data.images[i] for i in keep], [data.masks[i] for i in keep],
                                   list(data.classes), [data.ids[i] for i in keep],
                                   data.ignore_index, data.name, data.split, data.source,
                                   dict(data.extra))
    return PointCloudDataset(data.points[keep], data.labels[keep], list(data.classes),
                             None if data.parts is None else data.parts[keep],
                             data.category_parts, data.name, data.split, data.source,
                             dict(data.extra))


def model_outputs(task: str, data: TaskDataset) -> int:
    """The model's number of outputs: part labels for part segmentation, else classes."""
    if task == "pointcloud_part_segmentation":
        if not isinstance(data, PointCloudDataset) or data.parts is None:
            raise DatasetError(f"{data.source or data.name}: part segmentation needs per-point "
                               "part labels")
        return data.num_parts
    return len(data.classes)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for the augmentation of sample ``index`` in ``epoch``."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0] >> 1)


class SampleLoader(BatchLoader):
    """:class:`BatchLoader`'s order, sharding and resuming, with batches made by
    ``make(indices, epoch)`` (segmentation crops, point clouds) instead of an array gather."""

    def __init__(self, dataset: Any, batch_size: int,
                 make: Callable[[np.ndarray, int], Batch], **kwargs: Any) -> None:
        super().__init__(dataset, batch_size, **kwargs)
        self.make = make

    def _gather(self, idx: np.ndarray) -> Batch:  # type: ignore[override]
        return self.make(idx, self.epoch)


def _points(data: PointCloudDataset, idx: np.ndarray, num_points: int) -> torch.Tensor:
    """(B, 3, N) float32 of the first ``num_points`` points of the clouds ``idx``."""
    return torch.from_numpy(np.ascontiguousarray(
        data.points[idx, :num_points].transpose(0, 2, 1)))


def point_batch(data: PointCloudDataset, idx: np.ndarray, num_points: int,
                part_seg: bool) -> Batch:
    """``((x,), labels)`` or, for part segmentation, ``((x, category), parts)``."""
    x = _points(data, idx, num_points)
    labels = torch.from_numpy(data.labels[idx])
    if part_seg:
        assert data.parts is not None
        return (x, labels), torch.from_numpy(np.ascontiguousarray(data.parts[idx, :num_points]))
    return (x,), labels


def image_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``x`` in the channels-last memory format when ``channels_last`` and ``x`` is a
    ``(B, C, H, W)`` batch; otherwise ``x`` itself (point clouds keep their layout). The
    values are the same; only the strides change."""
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


class ImageBatches:
    """Image classification, exactly as the engine always trained it: ``augment`` (crop,
    flip, policies, MixUp/CutMix soft targets) on the device, soft cross-entropy, top-1;
    with ``channels_last`` the augmented batch is handed on in that memory format."""

    def __init__(self, augment: nn.Module, loss: Callable[[torch.Tensor, torch.Tensor],
                                                          torch.Tensor],
                 channels_last: bool = False) -> None:
        self.augment, self._loss, self.channels_last = augment, loss, channels_last

    def to_device(self, batch: tuple[torch.Tensor, torch.Tensor], device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = batch
        return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    def train_inputs(self, batch: tuple[torch.Tensor, torch.Tensor]
                     ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        x, targets = self.augment(*batch)
        return (image_layout(x, self.channels_last),), targets

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self._loss(logits, targets)

    def hits(self, logits: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]
             ) -> tuple[torch.Tensor, float]:
        labels = batch[1]
        return (logits.argmax(-1) == labels).sum(), float(len(labels))

    def samples(self, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        return len(batch[1])


class TaskBatches:
    """Segmentation and point clouds: ``(inputs, target)`` batches, ``task.augment`` on the
    device (after the step's reseeding), ``task.loss``, accuracy over counted targets;
    with ``channels_last`` image batches (not point clouds) go on in that memory format."""

    def __init__(self, task: Task, normalize: nn.Module | None = None,
                 channels_last: bool = False) -> None:
        self.task, self.normalize, self.channels_last = task, normalize, channels_last

    def to_device(self, batch: Batch, device: torch.device) -> Batch:
        inputs, target = batch
        return (tuple(t.to(device, non_blocking=True) for t in inputs),
                target.to(device, non_blocking=True))

    def train_inputs(self, batch: Batch) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        (x, *rest), target = batch
        if self.normalize is not None:
            return (image_layout(self.normalize(x), self.channels_last), *rest), target
        x, target = self.task.augment(x, target)
        return (image_layout(x, self.channels_last), *rest), target

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.task.loss(logits, targets)

    def hits(self, logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Correct and counted targets (pixels or points not ignored; clouds)."""
        target = batch[1]
        pred = logits.argmax(1)
        if self.task.ignore_index is None:
            # a fill on the device, not a host-to-device copy
            return (pred == target).sum(), torch.full((), float(target.numel()),
                                                      dtype=torch.float64, device=target.device)
        keep = target != self.task.ignore_index
        return ((pred == target) & keep).sum(), keep.sum().double()

    def samples(self, batch: Batch) -> int:
        return int(batch[1].shape[0])


@dataclass
class TaskLoaders:
    """What :func:`task_loaders` returns: the training loader and the batch preparation."""

    loader: SampleLoader
    batches: TaskBatches


def task_loaders(task: Task, train_set: TaskDataset, batch_size: int, *, seed: int,
                 rank: int, world_size: int, workers: int, crop_size: tuple[int, int],
                 scale: tuple[float, float], flip: bool, num_points: int,
                 normalize: nn.Module | None, channels_last: bool = False) -> TaskLoaders:
    """The training loader (shuffled, sharded, resumable) and batch preparation
    (``channels_last``: image batches in that memory format; ignored for point clouds)."""
    if isinstance(train_set, SegmentationDataset):
        aug = SegmentationAugment(crop_size, scale, flip, ignore_index=train_set.ignore_index)

        def make(idx: np.ndarray, epoch: int) -> Batch:
            samples = [aug(train_set.images[i], train_set.masks[i],
                           torch.Generator().manual_seed(sample_seed(seed, epoch, int(i))))
                       for i in idx]
            images, masks = collate_segmentation(samples)
            return (images,), masks
    else:
        part_seg = task.name == "pointcloud_part_segmentation"

        def make(idx: np.ndarray, epoch: int) -> Batch:
            return point_batch(train_set, idx, num_points, part_seg)
    loader = SampleLoader(train_set, batch_size, make, shuffle=True, seed=seed,
                          drop_last=True, rank=rank, world_size=world_size, workers=workers)
    return TaskLoaders(loader, TaskBatches(task, normalize, channels_last))


def _segment(model: nn.Module, x: torch.Tensor, mode: str, window: tuple[int, int] | None,
             size_divisor: int) -> torch.Tensor:
    if mode == "slide":
        if window is None:
            raise ValueError("eval mode 'slide' needs the window (the crop size)")
        return sliding_window_inference(model, x, window)
    if mode != "whole":
        raise ValueError(f"eval mode must be 'whole' or 'slide', got {mode!r}")
    return whole_image_inference(model, x, size_divisor)


def _seg_batches(data: SegmentationDataset, indices: list[int], batch_size: int):
    """Runs of consecutive samples of one size, at most ``batch_size`` long."""
    run: list[int] = []
    for i in indices:
        if run and (len(run) == batch_size or data.masks[i].shape != data.masks[run[0]].shape):
            yield run
            run = []
        run.append(i)
    if run:
        yield run


@torch.no_grad()
def evaluate_task(model: nn.Module, task: Task, data: TaskDataset, device: torch.device,
                  *, batch_size: int, num_classes: int, dtype: torch.dtype | None = None,
                  info: D.DistInfo | None = None, normalize: nn.Module | None = None,
                  mode: str = "whole", window: tuple[int, int] | None = None,
                  num_points: int | None = None, size_divisor: int = 8) -> dict[str, Any]:
    """The task's metrics (``task.meter``) of ``model`` over ``data``.

    Under DDP each process takes every ``world_size``-th sample and the counts are summed,
    so each sample counts once. The loss is the mean over counted pixels / points (over
    clouds for classification). Returns the meter's summary plus ``per_class`` (IoU per
    class for segmentation, accuracy per class for classification, mIoU per category for
    part segmentation; percent, None when absent).
    """
    model.eval()
    meter: TaskMeter = task.meter(num_classes, device)
    rank, ws = (info.rank, info.world_size) if info is not None else (0, 1)
    indices = list(range(rank, len(data), ws))
    autocast = dict(device_type=device.type, dtype=dtype or torch.float32,
                    enabled=dtype is not None)
    ignore = -100 if task.ignore_index is None else task.ignore_index
    if isinstance(data, SegmentationDataset):
        if normalize is None:
            raise ValueError("segmentation evaluation needs the normalisation")

        def net(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(**autocast):
                return model(x).float()

        for run in _seg_batches(data, indices, batch_size):
            images = torch.stack([torch.from_numpy(data.images[i]) for i in run]).to(device)
            masks = torch.stack([torch.from_numpy(data.masks[i]) for i in run]).to(device).long()
            logits = _segment(net, normalize(images), mode, window, size_divisor).float()
            counted = float((masks != ignore).sum())
            loss = F.cross_entropy(logits, masks, ignore_index=ignore, reduction="sum")
            meter.update(logits, masks, loss / max(counted, 1.0), weight=counted)
    else:
        part_seg = task.name == "pointcloud_part_segmentation"
        n = num_points or data.num_points
        for k in range(0, len(indices), batch_size):
            idx = np.asarray(indices[k:k + batch_size])
            inputs, target = point_batch(data, idx, n, part_seg)
            inputs = tuple(t.to(device) for t in inputs)
            target = target.to(device)
            with torch.autocast(**autocast):
                logits = model(*inputs)
            logits = logits.float()
            weight = float(target.numel())
            loss = F.cross_entropy(logits, target, reduction="sum") / weight
            meter.update(logits, target, loss, weight=weight,
                         category=inputs[1] if part_seg else None)
    if info is not None and info.enabled:
        meter.all_reduce(lambda t: D.all_reduce_sum(t, info))
    out = meter.summary()
    out["per_class"] = meter.per_class()
    return out


def seg_normalize(mean: Any, std: Any) -> Normalize:
    """uint8 (B, C, H, W) -> normalised float, at the batch's own size."""
    return Normalize(tuple(mean), tuple(std), None)


def num_points_for(requested: int | None, model_default: int, data: TaskDataset) -> int:
    """``--num-points``, else the model's N, at most the points the data has."""
    have = data.num_points if isinstance(data, PointCloudDataset) else model_default
    n = requested or min(model_default, have)
    if n <= 0 or n > have:
        raise ValueError(f"--num-points must be in [1, {have}] (the points of each cloud), "
                         f"got {n}")
    return n


def describe(data: TaskDataset) -> str:
    """A short description for the log."""
    if isinstance(data, SegmentationDataset):
        sizes = {m.shape for m in data.masks}
        size = f"{next(iter(sizes))[1]}x{next(iter(sizes))[0]}" if len(sizes) == 1 else \
            f"{len(sizes)} sizes"
        return f"{data.name} {data.split}: {len(data)} images ({size}), {data.num_classes} " \
               f"classes"
    parts = f", {data.num_parts} parts" if data.parts is not None else ""
    return f"{data.name} {data.split}: {len(data)} clouds of {data.num_points} points, " \
           f"{len(data.classes)} classes{parts}"
