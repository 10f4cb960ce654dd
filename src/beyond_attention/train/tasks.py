"""What differs between tasks, in one class each: the batch augmentation, batch -> loss,
and the metrics accumulated over an evaluation.

A task is chosen by the model's config (``ModelConfig.task``, :func:`task_for`):

- ``image_classification``: cross-entropy (label smoothing optional); top-1 accuracy.
- ``pointcloud_classification``: PCT's training augmentation (arXiv:2012.09688, Sec. 4.1:
  anisotropic scaling in [2/3, 3/2], translation in [-0.2, 0.2]) on (B, 3, N) clouds,
  cross-entropy; overall accuracy and mean class accuracy (PCT Table 1's OA and mAcc).
- ``semantic_segmentation``: pixel-wise cross-entropy with the ignore label (255, Pascal
  VOC's border label); mIoU and pixel accuracy from a confusion matrix.
- ``pointcloud_part_segmentation``: per-point cross-entropy over the part labels, the
  model called as ``model(x, category)``; instance-averaged and class-averaged mIoU over
  each category's parts (the ShapeNet-Part convention of PointNet, arXiv:1612.00593,
  Sec. 5.1, followed by PCT, arXiv:2012.09688, Table 4) and point accuracy.

Every task has the same four calls: ``augment(x, y, generator)``, ``loss(logits, y)``,
``meter(num_classes, device)`` (``update(logits, y)``, ``summary()``) and ``score``, the
summary key that ranks checkpoints (higher is better).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..data.point_augment import PointAugment
from ..models._registry import get_model_config
from .metrics import ConfusionMatrix, shape_part_iou

__all__ = [
    "IGNORE_INDEX",
    "ImageClassification",
    "PartSegMeter",
    "PointCloudClassification",
    "PointCloudPartSegmentation",
    "SemanticSegmentation",
    "Task",
    "TaskMeter",
    "make_task",
    "model_task",
    "task_for",
]

IGNORE_INDEX = 255


#: Sums a tensor over the processes in place (``distributed.all_reduce_sum``).
Reduce = Callable[[torch.Tensor], Any]


class TaskMeter:
    """Accumulates a confusion matrix over batches and reads the task's metrics from it.

    The loss is averaged with the weight given with each batch (the batch size by default;
    the counted pixels or points for a per-pixel mean), ``count`` is the samples seen.
    """

    def __init__(self, num_classes: int, device: torch.device | str, ignore_index: int | None,
                 keys: tuple[str, ...]) -> None:
        self.cm = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)
        self.keys = keys
        self.loss_sum, self.weight, self.count = 0.0, 0.0, 0

    def update(self, logits: torch.Tensor, target: torch.Tensor,
               loss: torch.Tensor | None = None, weight: float | None = None,
               category: torch.Tensor | None = None) -> None:
        """Add a batch: logits (B, K, ...) and labels (B, ...); ``loss`` the batch mean,
        ``weight`` what it averages over (default B); ``category`` is unused here."""
        self.cm.update(logits, target)
        self.count += target.shape[0]
        if loss is not None:
            w = float(target.shape[0] if weight is None else weight)
            self.loss_sum += float(loss) * w
            self.weight += w

    def all_reduce(self, reduce: Reduce) -> None:
        """Sum the accumulated counts over processes (every process calls it)."""
        reduce(self.cm.matrix)
        sums = torch.tensor([self.loss_sum, self.weight, float(self.count)],
                            dtype=torch.float64, device=self.cm.matrix.device)
        reduce(sums)
        self.loss_sum, self.weight, count = sums.tolist()
        self.count = int(count)

    def per_class(self) -> list[float | None]:
        """Per-class IoU (segmentation) or accuracy (classification), percent; None for a
        class that does not occur."""
        values = self.cm.iou() if "miou" in self.keys else self.cm.class_accuracy()
        return [None if v != v else 100 * v for v in values.tolist()]

    def summary(self) -> dict[str, Any]:
        """The task's metrics (percentages), the mean loss and the counted samples."""
        cm = self.cm
        values = {
            "top1": 100 * cm.overall_accuracy(),
            "overall_accuracy": 100 * cm.overall_accuracy(),
            "mean_class_accuracy": 100 * cm.mean_class_accuracy(),
            "miou": 100 * cm.miou(),
            "pixel_accuracy": 100 * cm.pixel_accuracy(),
            "point_accuracy": 100 * cm.pixel_accuracy(),
        }
        out: dict[str, Any] = {k: values[k] for k in self.keys}
        out["loss"] = self.loss_sum / self.weight if self.weight else None
        out["count"] = self.count
        return out


class PartSegMeter(TaskMeter):
    """Part-segmentation metrics: per-shape part IoU (:func:`shape_part_iou`, a part absent
    from prediction and target counts 1), averaged over all shapes (instance mIoU) and per
    category then over the categories present (class mIoU), plus point accuracy.

    ``update`` needs the ``category`` (B,) of each shape; logits (B, P, N) are restricted
    to the category's parts before the argmax (for the point accuracy too), as the metric
    is usually computed.
    """

    def __init__(self, num_classes: int, device: torch.device | str,
                 category_parts: list[list[int]]) -> None:
        super().__init__(num_classes, device, None, ("point_accuracy",))
        self.category_parts = category_parts
        # per category: sum of shape IoUs, number of shapes
        self.shape_sums = torch.zeros(2, len(category_parts), dtype=torch.float64,
                                      device=device)
        self.allowed = torch.zeros(len(category_parts), num_classes, dtype=torch.bool,
                                   device=device)
        for c, parts in enumerate(category_parts):
            self.allowed[c, parts] = True

    def update(self, logits: torch.Tensor, target: torch.Tensor,
               loss: torch.Tensor | None = None, weight: float | None = None,
               category: torch.Tensor | None = None) -> None:
        if category is None:
            raise ValueError("part segmentation metrics need the category (B,) of each shape")
        allowed = self.allowed.to(logits.device)[category.long()].unsqueeze(-1)  # (B, P, 1)
        pred = logits.detach().masked_fill(~allowed, float("-inf")).argmax(1)
        super().update(pred, target, loss, weight)
        iou = shape_part_iou(pred, target, category, self.category_parts)
        cat = category.to(self.shape_sums.device).long()
        self.shape_sums[0].index_add_(0, cat, iou.to(self.shape_sums.device))
        self.shape_sums[1].index_add_(0, cat, torch.ones_like(iou).to(self.shape_sums.device))

    def all_reduce(self, reduce: Reduce) -> None:
        super().all_reduce(reduce)
        reduce(self.shape_sums)

    def per_class(self) -> list[float | None]:
        """Per-category mIoU, percent (None for a category without shapes)."""
        sums, counts = self.shape_sums.tolist()
        return [100 * s / n if n else None for s, n in zip(sums, counts, strict=True)]

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        sums, counts = self.shape_sums
        n = float(counts.sum())
        present = counts > 0
        out["instance_miou"] = 100 * float(sums.sum()) / n if n else float("nan")
        out["class_miou"] = (100 * float((sums[present] / counts[present]).mean())
                             if bool(present.any()) else float("nan"))
        return {k: out[k] for k in ("instance_miou", "class_miou", "point_accuracy", "loss",
                                    "count")}


class Task:
    """The base: cross-entropy over dimension 1 of the logits, no augmentation."""

    name: ClassVar[str]
    score: ClassVar[str]
    keys: ClassVar[tuple[str, ...]]
    ignore_index: ClassVar[int | None] = None

    def __init__(self, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def augment(self, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The training augmentation of a batch (identity here)."""
        return x, y

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of logits (B, K, ...) against labels (B, ...), float32."""
        if logits.ndim != target.ndim + 1 or logits.shape[2:] != target.shape[1:]:
            raise ValueError(f"logits must be (B, K, ...) and target (B, ...) alike, got "
                             f"{tuple(logits.shape)} and {tuple(target.shape)}")
        return F.cross_entropy(logits.float(), target.long(),
                               ignore_index=-100 if self.ignore_index is None
                               else self.ignore_index,
                               label_smoothing=self.label_smoothing)

    def meter(self, num_classes: int, device: torch.device | str = "cpu") -> TaskMeter:
        """A fresh metric accumulator for an evaluation."""
        return TaskMeter(num_classes, device, self.ignore_index, self.keys)


class ImageClassification(Task):
    """Images (B, C, H, W) -> logits (B, K); top-1 accuracy."""

    name = "image_classification"
    score = "top1"
    keys = ("top1", "mean_class_accuracy")


class PointCloudClassification(Task):
    """Clouds (B, 3, N) -> logits (B, K); overall and mean class accuracy.

    ``augment`` applies PCT's scaling and translation (``rotate=True`` adds a rotation
    about the up axis) to the coordinates, the first three channels.
    """

    name = "pointcloud_classification"
    score = "overall_accuracy"
    keys = ("overall_accuracy", "mean_class_accuracy")

    def __init__(self, label_smoothing: float = 0.0, rotate: bool = False) -> None:
        super().__init__(label_smoothing)
        self.point_augment = PointAugment(rotate=rotate)

    def augment(self, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 3 or x.shape[1] < 3:
            raise ValueError(f"x must be point clouds (B, C>=3, N), got {tuple(x.shape)}")
        xyz = self.point_augment(x[:, :3].transpose(1, 2), generator).transpose(1, 2)
        return torch.cat([xyz, x[:, 3:]], dim=1), y


class SemanticSegmentation(Task):
    """Images (B, C, H, W) -> logits (B, K, H, W) against masks (B, H, W); label 255 is
    ignored in the loss and the metrics. mIoU and pixel accuracy."""

    name = "semantic_segmentation"
    score = "miou"
    keys = ("miou", "pixel_accuracy", "mean_class_accuracy")
    ignore_index = IGNORE_INDEX


class PointCloudPartSegmentation(PointCloudClassification):
    """Clouds (B, 3, N) and their category (B,) -> per-point logits (B, P, N) against part
    labels (B, N); ``model(x, category)``. Instance and class mIoU (:class:`PartSegMeter`)
    and point accuracy; ``category_parts`` lists each category's part labels.

    ``augment`` is PCT's scaling and translation, as for classification.
    """

    name = "pointcloud_part_segmentation"
    score = "instance_miou"
    keys = ("instance_miou", "class_miou", "point_accuracy")

    def __init__(self, label_smoothing: float = 0.0, rotate: bool = False,
                 category_parts: list[list[int]] | None = None) -> None:
        super().__init__(label_smoothing, rotate)
        self.category_parts = category_parts

    def meter(self, num_classes: int, device: torch.device | str = "cpu") -> TaskMeter:
        if self.category_parts is None:
            raise ValueError("part segmentation metrics need category_parts (the part labels "
                             "of each category)")
        return PartSegMeter(num_classes, device, self.category_parts)


_TASKS: dict[str, type[Task]] = {
    t.name: t for t in (ImageClassification, PointCloudClassification, SemanticSegmentation,
                        PointCloudPartSegmentation)
}


def make_task(name: str, **kwargs: Any) -> Task:
    """The task class for a ``ModelConfig.task`` name."""
    if name not in _TASKS:
        raise ValueError(f"task must be one of {', '.join(sorted(_TASKS))} (the engine's "
                         f"tasks), got {name!r}")
    return _TASKS[name](**kwargs)


def task_for(model_name: str, **kwargs: Any) -> Task:
    """The task of a registered model, from its config."""
    return make_task(get_model_config(model_name).task, **kwargs)


def model_task(model: torch.nn.Module) -> str:
    """The task name of a built model: its config's, ``image_classification`` without one."""
    return str(getattr(getattr(model, "config", None), "task", ImageClassification.name))
