"""The engine's tasks: losses against the formula written out, metrics against hand counts,
PCT's point augmentation against its draws."""

from __future__ import annotations

import math

import pytest
import torch

from beyond_attention.train.tasks import (
    ImageClassification,
    PointCloudClassification,
    SemanticSegmentation,
    make_task,
    model_task,
    task_for,
)


def test_segmentation_loss_is_the_pixel_cross_entropy_without_ignored_pixels() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    target = torch.randint(0, 4, (2, 3, 3))
    target[0, 0, :] = 255
    total, n = 0.0, 0
    for b in range(2):
        for i in range(3):
            for j in range(3):
                t = int(target[b, i, j])
                if t == 255:
                    continue
                z = logits[b, :, i, j]
                total += -(float(z[t]) - math.log(sum(math.exp(v) for v in z.tolist())))
                n += 1
    loss = SemanticSegmentation().loss(logits, target)
    assert loss.dtype == torch.float32
    assert float(loss) == pytest.approx(total / n, rel=1e-6)


def test_segmentation_metrics_against_a_hand_count() -> None:
    # classes 0, 1, 2; one ignored pixel (predicted 2, not counted)
    target = torch.tensor([[0, 0, 1, 1, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1, 0, 2]])
    logits = torch.nn.functional.one_hot(pred, 3).permute(0, 2, 1).double()
    meter = SemanticSegmentation().meter(3)
    meter.update(logits, target)
    out = meter.summary()
    # IoU: class 0 tp 1 / (2 + 2 - 1) = 1/3; class 1 tp 2 / (2 + 3 - 2) = 2/3; class 2 0/1
    assert out["miou"] == pytest.approx(100 * (1 / 3 + 2 / 3 + 0) / 3)
    assert out["pixel_accuracy"] == pytest.approx(100 * 3 / 5)
    assert set(out) == {"miou", "pixel_accuracy", "mean_class_accuracy", "loss", "count"}


def test_point_classification_metrics_overall_and_mean_class_accuracy() -> None:
    target = torch.tensor([0, 0, 0, 1])
    logits = torch.nn.functional.one_hot(torch.tensor([0, 0, 1, 0]), 2).double()
    meter = PointCloudClassification().meter(2)
    meter.update(logits, target, loss=torch.tensor(0.5))
    out = meter.summary()
    assert out["overall_accuracy"] == pytest.approx(50.0)
    assert out["mean_class_accuracy"] == pytest.approx(100 * (2 / 3 + 0) / 2)
    assert out["loss"] == pytest.approx(0.5) and out["count"] == 4


def test_point_augmentation_scales_then_translates_each_cloud() -> None:
    x = torch.randn(3, 5, 7, dtype=torch.float64)  # 3 coordinates + 2 extra channels
    y = torch.arange(3)
    out, out_y = PointCloudClassification().augment(x, y, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    scale = 2 / 3 + (1.5 - 2 / 3) * torch.rand((3, 1, 3), generator=g, dtype=torch.float64)
    shift = -0.2 + 0.4 * torch.rand((3, 1, 3), generator=g, dtype=torch.float64)
    xyz = x[:, :3].transpose(1, 2) * scale + shift
    torch.testing.assert_close(out[:, :3], xyz.transpose(1, 2))
    torch.testing.assert_close(out[:, 3:], x[:, 3:])
    assert out_y is y
    with pytest.raises(ValueError, match=r"x must be point clouds"):
        PointCloudClassification().augment(torch.randn(2, 2, 7), y[:2])


def test_classification_loss_with_label_smoothing() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    eps = 0.3
    logp = logits.log_softmax(-1)[0]
    want = -((1 - eps) * logp[0] + eps / 3 * logp.sum())
    got = ImageClassification(label_smoothing=eps).loss(logits, torch.tensor([0]))
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    with pytest.raises(ValueError, match="logits must be"):
        ImageClassification().loss(logits, torch.tensor([[0]]))
    with pytest.raises(ValueError, match="label_smoothing"):
        ImageClassification(label_smoothing=1.0)


def test_task_from_the_model_config() -> None:
    assert isinstance(task_for("pct"), PointCloudClassification)
    assert isinstance(task_for("eanet_resnet26_small"), SemanticSegmentation)
    assert isinstance(task_for("vit_tiny_cifar"), ImageClassification)
    assert task_for("spct").score == "overall_accuracy"
    assert task_for("pct_partseg").score == "instance_miou"
    with pytest.raises(ValueError, match="task must be one of"):
        make_task("object_detection")


def test_model_task_reads_the_config() -> None:
    from beyond_attention import create_model

    with torch.device("meta"):
        assert model_task(create_model("spct")) == "pointcloud_classification"
    assert model_task(torch.nn.Linear(2, 2)) == "image_classification"


def test_checkpoint_metadata_records_the_task() -> None:
    from beyond_attention.train.checkpoint import model_metadata

    meta = model_metadata("spct", 40, 3, (1, 1024), (0.0,), (1.0,), [], task=model_task(
        torch.nn.Linear(1, 1)))
    assert meta["task"] == "image_classification"
    assert model_metadata("x", 2, 3, (8, 8), (0.0,), (1.0,), [], task="semantic_segmentation")[
        "task"] == "semantic_segmentation"
