"""Confusion-matrix metrics: mIoU, pixel (overall) accuracy, mean class accuracy.

One ``K x K`` matrix ``M`` (rows: true class, columns: predicted class) accumulates any
number of batches; every metric is read from it::

    IoU_c            = M_cc / (sum_j M_cj + sum_i M_ic - M_cc)
    mIoU             = mean of IoU_c over the classes that occur (in target or prediction)
    pixel accuracy   = trace(M) / sum(M)          (overall accuracy for classification)
    class accuracy_c = M_cc / sum_j M_cj         (recall); mean class accuracy = its mean
                                                   over the classes present in the target

Labels equal to ``ignore_index`` (255 in Pascal VOC) are left out of the count. The matrix
is an int64 tensor: sum it over processes (``all_reduce``) for distributed evaluation.
"""

from __future__ import annotations

import torch

__all__ = ["ConfusionMatrix", "confusion_matrix", "shape_part_iou"]


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """The ``(num_classes, num_classes)`` int64 count of (true, predicted) label pairs.

    Args:
        pred: predicted labels, any shape; or logits with one more dimension than
            ``target``, classes in dimension 1 (``(B, K, ...)``), reduced by argmax.
        target: true labels, the shape of the predicted labels.
        num_classes: K.
        ignore_index: target value left out of the count (e.g. 255), or ``None``.

    Raises ``ValueError`` for mismatched shapes or labels outside ``[0, K)``.
    """
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if pred.ndim == target.ndim + 1:
        if pred.shape[1] != num_classes:
            raise ValueError(
                f"pred logits must have num_classes={num_classes} channels in dimension 1, "
                f"got shape {tuple(pred.shape)}"
            )
        pred = pred.argmax(dim=1)
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    if pred.is_floating_point() or target.is_floating_point():
        raise TypeError("pred labels and target must be integer tensors (or pred logits)")
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long().to(pred.device)
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    for name, t in (("target", target), ("pred", pred)):
        if t.numel() and (t.min() < 0 or t.max() >= num_classes):
            raise ValueError(
                f"{name} labels must lie in [0, {num_classes})"
                + (f" or equal ignore_index={ignore_index}" if name == "target" and
                   ignore_index is not None else "")
                + f", got values in [{int(t.min())}, {int(t.max())}]"
            )
    flat = target * num_classes + pred
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


class ConfusionMatrix:
    """An accumulating confusion matrix and the metrics read from it.

    Example::

        cm = ConfusionMatrix(21, ignore_index=255)
        for images, masks in loader:
            cm.update(model(images), masks)          # logits (B, K, H, W), masks (B, H, W)
        cm.miou(), cm.pixel_accuracy()
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None,
                 device: torch.device | str = "cpu") -> None:
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch (labels or logits, see :func:`confusion_matrix`)."""
        counts = confusion_matrix(pred.detach(), target.detach(), self.num_classes,
                                  self.ignore_index)
        self.matrix += counts.to(self.matrix.device)

    def reset(self) -> None:
        self.matrix.zero_()

    @property
    def total(self) -> int:
        """Counted (non-ignored) labels."""
        return int(self.matrix.sum())

    def iou(self) -> torch.Tensor:
        """Per-class IoU (K,) float64; NaN for a class absent from target and prediction."""
        m = self.matrix.double()
        tp = m.diagonal()
        union = m.sum(0) + m.sum(1) - tp
        return torch.where(union > 0, tp / union.clamp_min(1), torch.nan)

    def miou(self) -> float:
        """Mean IoU over the classes that occur (NaN if nothing was counted)."""
        iou = self.iou()
        return float(iou.nanmean()) if (~iou.isnan()).any() else float("nan")

    def pixel_accuracy(self) -> float:
        """Correct labels over counted labels (the overall accuracy)."""
        total = self.total
        return float(self.matrix.diagonal().sum()) / total if total else float("nan")

    overall_accuracy = pixel_accuracy

    def class_accuracy(self) -> torch.Tensor:
        """Per-class recall (K,) float64; NaN for a class absent from the target."""
        m = self.matrix.double()
        support = m.sum(1)
        return torch.where(support > 0, m.diagonal() / support.clamp_min(1), torch.nan)

    def mean_class_accuracy(self) -> float:
        """Mean recall over the classes present in the target."""
        acc = self.class_accuracy()
        return float(acc.nanmean()) if (~acc.isnan()).any() else float("nan")

    def summary(self) -> dict[str, float]:
        """``{"miou", "pixel_accuracy", "mean_class_accuracy"}`` as plain floats."""
        return {"miou": self.miou(), "pixel_accuracy": self.pixel_accuracy(),
                "mean_class_accuracy": self.mean_class_accuracy()}


def shape_part_iou(
    pred: torch.Tensor, target: torch.Tensor, category: torch.Tensor,
    category_parts: list[list[int]],
) -> torch.Tensor:
    """Per-shape part IoU, the ShapeNet-Part convention (instance mIoU is its mean).

    For each shape, the IoU of every part label of its category, averaged; a part absent
    from both the prediction and the target counts as IoU 1.

    Args:
        pred: predicted part labels (B, N), or logits (B, P, N) (argmax over dimension 1;
            restricted to the shape's category parts, as usual for this metric).
        target: true part labels (B, N).
        category: object category of each shape (B,).
        category_parts: for each category, its part labels.

    Returns (B,) float64.
    """
    if target.ndim != 2 or category.shape != target.shape[:1]:
        raise ValueError(f"target must be (B, N) and category (B,), got "
                         f"{tuple(target.shape)} and {tuple(category.shape)}")
    out = torch.empty(target.shape[0], dtype=torch.float64)
    for b in range(target.shape[0]):
        parts = torch.as_tensor(category_parts[int(category[b])], device=target.device)
        labels = parts[pred[b, parts].argmax(dim=0)] if pred.ndim == 3 else pred[b]
        p = labels.unsqueeze(0) == parts.unsqueeze(1)  # (P, N)
        t = target[b].unsqueeze(0) == parts.unsqueeze(1)
        inter, union = (p & t).sum(1).double(), (p | t).sum(1).double()
        out[b] = torch.where(union > 0, inter / union.clamp_min(1), 1.0).mean()
    return out
