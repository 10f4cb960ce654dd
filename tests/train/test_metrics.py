"""Confusion-matrix metrics against counts made by hand."""

from __future__ import annotations

import math

import pytest
import torch

from beyond_attention.train.metrics import ConfusionMatrix, confusion_matrix, shape_part_iou

# 3 classes, one ignored pixel (255):
# target: 0 0 0 1 1 2 255      pred: 0 0 1 1 2 2 0
TARGET = torch.tensor([[0, 0, 0, 1], [1, 2, 255, 0]])
PRED = torch.tensor([[0, 0, 1, 1], [2, 2, 0, 0]])
# pairs (t, p): (0,0) (0,0) (0,1) (1,1) (1,2) (2,2) (0,0)  -> ignored (255, 0) left out
HAND = torch.tensor([[3, 1, 0], [0, 1, 1], [0, 0, 1]])


def test_matrix_is_the_hand_count() -> None:
    assert torch.equal(confusion_matrix(PRED, TARGET, 3, ignore_index=255), HAND)


def test_metrics_are_the_hand_values() -> None:
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(PRED[:1], TARGET[:1])
    cm.update(PRED[1:], TARGET[1:])
    assert torch.equal(cm.matrix, HAND)
    # IoU: class 0: 3 / (4 + 3 - 3) = 3/4; class 1: 1 / (2 + 2 - 1) = 1/3; class 2: 1/2
    torch.testing.assert_close(cm.iou(), torch.tensor([3 / 4, 1 / 3, 1 / 2], dtype=torch.float64))
    assert cm.miou() == pytest.approx((3 / 4 + 1 / 3 + 1 / 2) / 3)
    assert cm.pixel_accuracy() == pytest.approx(5 / 7) == cm.overall_accuracy()
    # recall: 3/4, 1/2, 1/1
    assert cm.mean_class_accuracy() == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    assert cm.total == 7
    assert set(cm.summary()) == {"miou", "pixel_accuracy", "mean_class_accuracy"}


def test_logits_are_reduced_by_argmax() -> None:
    logits = torch.nn.functional.one_hot(PRED, 3).permute(0, 2, 1).float()  # (B, K, N)
    assert torch.equal(confusion_matrix(logits, TARGET, 3, ignore_index=255), HAND)


def test_absent_classes_are_left_out_of_the_means() -> None:
    cm = ConfusionMatrix(4)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert math.isnan(float(cm.iou()[3])) and cm.miou() == 1.0
    assert cm.mean_class_accuracy() == 1.0
    empty = ConfusionMatrix(2, ignore_index=255)
    empty.update(torch.tensor([0]), torch.tensor([255]))
    assert math.isnan(empty.miou()) and math.isnan(empty.pixel_accuracy())


def test_random_labels_match_a_loop_count() -> None:
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 5, (500,), generator=g)
    p = torch.randint(0, 5, (500,), generator=g)
    loop = torch.zeros(5, 5, dtype=torch.long)
    for a, b in zip(t.tolist(), p.tolist(), strict=True):
        loop[a, b] += 1
    assert torch.equal(confusion_matrix(p, t, 5), loop)


@pytest.mark.parametrize(
    ("pred", "target", "match"),
    [
        (torch.tensor([0, 3]), torch.tensor([0, 1]), r"pred labels must lie in \[0, 3\)"),
        (torch.tensor([0, 1]), torch.tensor([0, 7]), "or equal ignore_index=255"),
        (torch.tensor([0, 1, 2]), torch.tensor([0, 1]), "same shape"),
        (torch.zeros(2, 4, 5), torch.zeros(2, 5, dtype=torch.long), "num_classes=3 channels"),
    ],
)
def test_bad_labels_are_named(pred, target, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        confusion_matrix(pred, target, 3, ignore_index=255)


def test_shape_part_iou_by_hand() -> None:
    parts = [[0, 1], [2, 3, 4]]
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 3, 3]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 2, 3, 3]])
    iou = shape_part_iou(pred, target, torch.tensor([0, 1]), parts)
    # shape 0: part 0: 1/2, part 1: 2/3; shape 1: parts 2, 3 exact, part 4 absent -> 1
    torch.testing.assert_close(iou, torch.tensor([(1 / 2 + 2 / 3) / 2, 1.0],
                                                 dtype=torch.float64))
    logits = torch.zeros(2, 5, 4)
    logits[0, 4] = 10.0  # a part of another category is never predicted
    logits[0, 0] = 1.0
    iou = shape_part_iou(logits, target, torch.tensor([0, 1]), parts)
    assert float(iou[0]) == pytest.approx((2 / 4 + 0) / 2)
