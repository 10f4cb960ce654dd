"""What differs between tasks, in one class each: the batch augmentation, batch -> loss,
and the metrics accumulated over an evaluation.

A task is chosen by the model's config (``ModelConfig.task``, :func:`task_for`):

- ``image_classification``: cross-entropy (label smoothing optional); top-1 accuracy.
- ``pointcloud_classification``: PCT's training augmentation (arXiv:2012.09688, Sec. 4.1:
  anisotropic scaling in [2/3, 3/2], translation in [-0.2, 0.2]) on (B, 3, N) clouds,
  cross-entropy; overall accuracy and mean class accuracy (PCT Table 1's OA and mAcc).
- ``semantic_segmentation``: pixel-wise cross-entropy with the ignore label (255, Pascal
  VOC's border label); mIoU and pixel accuracy from a confusion matrix.

Every task has the same four calls: ``augment(x, y, generator)``, ``loss(logits, y)``,
``meter(num_classes, device)`` (``update(logits, y)``, ``summary()``) and ``score``, the
summary key that ranks checkpoints (higher is better).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..data.point_augment import PointAugment
from ..models._registry import get_model_config
from .metrics import ConfusionMatrix

__all__ = [
    "IGNORE_INDEX",
    "ImageClassification",
    "PointCloudClassification",
    "SemanticSegmentation",
    "Task",
    "TaskMeter",
    "make_task",
    "model_task",
    "task_for",
]

IGNORE_INDEX = 255


class TaskMeter:
    """Accumulates a confusion matrix over batches and reads the task's metrics from it."""

    def __init__(self, num_classes: int, device: torch.device | str, ignore_index: int | None,
                 keys: tuple[str, ...]) -> None:
        self.cm = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)
        self.keys = keys
        self.loss_sum, self.count = 0.0, 0

    def update(self, logits: torch.Tensor, target: torch.Tensor,
               loss: torch.Tensor | None = None) -> None:
        """Add a batch: logits (B, K, ...) and labels (B, ...); ``loss`` the batch mean."""
        self.cm.update(logits, target)
        if loss is not None:
            self.loss_sum += float(loss) * target.shape[0]
            self.count += target.shape[0]

    def summary(self) -> dict[str, Any]:
        """The task's metrics (percentages), the mean loss and the counted samples."""
        cm = self.cm
        values = {
            "top1": 100 * cm.overall_accuracy(),
            "overall_accuracy": 100 * cm.overall_accuracy(),
            "mean_class_accuracy": 100 * cm.mean_class_accuracy(),
            "miou": 100 * cm.miou(),
            "pixel_accuracy": 100 * cm.pixel_accuracy(),
        }
        out: dict[str, Any] = {k: values[k] for k in self.keys}
        out["loss"] = self.loss_sum / self.count if self.count else None
        out["count"] = self.count
        return out


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


_TASKS: dict[str, type[Task]] = {
    t.name: t for t in (ImageClassification, PointCloudClassification, SemanticSegmentation)
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
