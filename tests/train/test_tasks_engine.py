"""The engine on the tasks other than image classification: segmentation on a tiny VOC set
written here (palette masks with 255 borders), point-cloud classification on the
procedural set, part segmentation on a tiny ShapeNet-Part HDF5 set written here; resumed
runs against uninterrupted ones, ``evaluate`` on the saved checkpoints, the metrics
against hand counts, and the refusal of a model/data mismatch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from beyond_attention.cli import main as cli_main
from beyond_attention.data.find import detect, find_dataset
from beyond_attention.data.points import SHAPENET_PART_CATEGORIES, PointCloudDataset
from beyond_attention.data.segmentation import SegmentationDataset, voc_palette
from beyond_attention.train import TrainConfig, evaluate_checkpoint, train
from beyond_attention.train import task_data as TD
from beyond_attention.train.tasks import (
    PointCloudPartSegmentation,
    SemanticSegmentation,
    task_for,
)

TIMING = {"images_per_s", "seconds"}
SEG_CLASSES = ["background", "square", "disc"]


def _write_voc(root: Path, n_train: int = 8, n_val: int = 3) -> Path:
    """A VOC-layout set: a square (1) or a disc (2) on a background (0), a 1-pixel 255
    border around each object, JPEG images, palette PNG masks; val images of other sizes."""
    rng = np.random.default_rng(0)
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("val", n_val)):
        ids = []
        for k in range(n):
            h, w = (40, 40) if split == "train" else (36 + 4 * k, 40)
            mask = np.zeros((h, w), np.uint8)
            cls = 1 + k % 2
            cy, cx, r = rng.integers(12, h - 12), rng.integers(12, w - 12), 8
            yy, xx = np.mgrid[:h, :w]
            inside = (np.maximum(abs(yy - cy), abs(xx - cx)) <= r if cls == 1
                      else (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)
            grown = (np.maximum(abs(yy - cy), abs(xx - cx)) <= r + 1 if cls == 1
                     else (yy - cy) ** 2 + (xx - cx) ** 2 <= (r + 1.5) ** 2)
            mask[grown] = 255
            mask[inside] = cls
            image = np.zeros((h, w, 3), np.uint8) + rng.integers(0, 40, (h, w, 3), np.uint8)
            image[mask == cls] = (200, 60, 60) if cls == 1 else (60, 200, 60)
            name = f"{split}{k}"
            Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
            png = Image.fromarray(mask, mode="P")
            png.putpalette(voc_palette())
            png.save(root / "SegmentationClass" / f"{name}.png")
            ids.append(name)
        (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    (root / "classes.txt").write_text("\n".join(SEG_CLASSES) + "\n")
    return root


def _write_shapenet_part(root: Path, n: int = 12, points: int = 64) -> Path:
    """A ShapeNet-Part HDF5 set: clouds of categories 0 (Airplane, parts 0-3) and 4 (Chair,
    parts 12-15), each point's part from its height, in train/val/test files."""
    import h5py

    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        cats = np.array([0, 4] * (n // 2))
        data = rng.uniform(-1, 1, (n, points, 3)).astype(np.float32)
        band = np.clip(((data[:, :, 1] + 1) * 2).astype(int), 0, 3)
        first = np.array([SHAPENET_PART_CATEGORIES[c][0] for c in ("Airplane", "Chair")])
        pid = first[(cats == 4).astype(int)][:, None] + band
        with h5py.File(root / f"ply_data_{split}0.h5", "w") as f:
            f["data"] = data
            f["label"] = cats[:, None].astype(np.uint8)
            f["pid"] = pid.astype(np.uint8)
        (root / f"{split}_hdf5_file_list.txt").write_text(f"hdf5_data/ply_data_{split}0.h5\n")
    return root


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    return _write_voc(tmp_path_factory.mktemp("data") / "tinyvoc")


@pytest.fixture(scope="module")
def shapenet(tmp_path_factory) -> Path:
    return _write_shapenet_part(tmp_path_factory.mktemp("data") / "hdf5_data")


def _seg_cfg(voc: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model="eanet_resnet26_small", data=str(voc), out=str(out), epochs=2,
                batch_size=4, limit_train=8, crop_size=32, quiet=True, workers=0,
                device="cpu", save_every=1, seg_scale=(0.75, 1.25))
    base.update(kw)
    return TrainConfig(**base)


_SMALL_PCT = {"depth": 1, "width": 32, "fuse_dim": 64}


def _points_cfg(out: Path, **kw) -> TrainConfig:
    base = dict(model="spct", dataset="procedural-points", out=str(out), epochs=2,
                batch_size=8, limit_train=16, limit_val=24, num_points=32, quiet=True,
                workers=0, device="cpu", save_every=1, model_kwargs=dict(_SMALL_PCT))
    base.update(kw)
    return TrainConfig(**base)


def _partseg_cfg(shapenet: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model="pct_partseg", data=str(shapenet), out=str(out), epochs=2,
                batch_size=6, num_points=48, quiet=True, workers=0, device="cpu",
                save_every=1, model_kwargs={"depth": 1, "width": 16, "fuse_dim": 32,
                                            "category_dim": 8})
    base.update(kw)
    return TrainConfig(**base)


def _metrics(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


class _Stop(Exception):
    pass


def _stop_at(step: int):
    def hook(done: int) -> None:
        if done == step:
            raise _Stop
    return hook


def _check_resume_matches(make_cfg, tmp_path: Path) -> dict:
    """Train uninterrupted; train again stopped after step 3 and resumed; the weights,
    optimiser state and metrics agree exactly. Returns the uninterrupted final.json."""
    final = train(make_cfg(tmp_path / "full"))
    with pytest.raises(_Stop):
        train(make_cfg(tmp_path / "cut"), on_step=_stop_at(3))
    train(make_cfg(tmp_path / "cut", resume="auto"))
    for name in ("last.safetensors", "last.state.safetensors", "best.safetensors"):
        a, b = load_file(tmp_path / "full" / name), load_file(tmp_path / "cut" / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "cut")
    return final


def test_detect_recognises_the_task_formats(voc, shapenet, tmp_path):
    assert detect(voc).kind == "voc" and detect(voc).task == "semantic_segmentation"
    assert detect(shapenet).kind == "shapenet_part_h5"
    pairs = tmp_path / "pairs"
    (pairs / "train" / "images").mkdir(parents=True)
    (pairs / "train" / "masks").mkdir(parents=True)
    assert detect(pairs).kind == "maskfolder"
    mn = tmp_path / "mn40"
    mn.mkdir()
    (mn / "shape_names.txt").write_text("a\n")
    (mn / "train_files.txt").write_text("x.h5\n")
    assert detect(mn).kind == "modelnet_h5"
    off = tmp_path / "modelnet10" / "chair" / "train"
    off.mkdir(parents=True)
    (off / "c.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    assert detect(tmp_path / "modelnet10").kind == "modelnet_off"
    proc = find_dataset(None, "procedural-points")
    assert proc.kind == "procedural" and proc.serves("pointcloud_part_segmentation")
    assert not proc.serves("semantic_segmentation")


def test_segmentation_trains_resumes_exactly_and_evaluates(voc, tmp_path):
    final = _check_resume_matches(lambda out, **kw: _seg_cfg(voc, out, **kw), tmp_path)
    assert final["task"] == "semantic_segmentation" and final["score"] == "miou"
    assert set(final["per_class_iou"]) == set(SEG_CLASSES)
    rows = _metrics(tmp_path / "full")
    assert {"train_accuracy", "val_miou", "val_pixel_accuracy",
            "val_mean_class_accuracy"} <= set(rows[0])
    assert "train_top1" not in rows[0]
    assert final["best_miou"] == max(r["val_miou"] for r in rows)
    best = tmp_path / "full" / "best.safetensors"
    result = evaluate_checkpoint(best, device="cpu")  # data, split, mode from the record
    best_row = max(rows, key=lambda r: r["val_miou"])
    assert result["task"] == "semantic_segmentation" and result["count"] == 3
    assert result["miou"] == pytest.approx(best_row["val_miou"], abs=1e-6)
    assert result["pixel_accuracy"] == pytest.approx(best_row["val_pixel_accuracy"], abs=1e-6)
    slide = evaluate_checkpoint(best, device="cpu", eval_mode="slide")
    assert set(slide) == set(result) and 0 <= slide["miou"] <= 100


def test_point_classification_trains_resumes_exactly_and_evaluates(tmp_path, capsys):
    final = _check_resume_matches(_points_cfg, tmp_path)
    assert final["task"] == "pointcloud_classification" and final["num_points"] == 32
    rows = _metrics(tmp_path / "full")
    assert {"val_overall_accuracy", "val_mean_class_accuracy"} <= set(rows[0])
    assert cli_main(["evaluate", str(tmp_path / "full" / "best.safetensors"), "--json",
                     "--limit", "24"]) == 0
    result = json.loads(capsys.readouterr().out)
    best_row = max(rows, key=lambda r: r["val_overall_accuracy"])
    assert result["overall_accuracy"] == pytest.approx(best_row["val_overall_accuracy"])
    assert result["count"] == 24 and result["split"] == "test"


def test_part_segmentation_trains_resumes_exactly_and_evaluates(shapenet, tmp_path, capsys):
    final = _check_resume_matches(lambda out, **kw: _partseg_cfg(shapenet, out, **kw),
                                  tmp_path)
    assert final["task"] == "pointcloud_part_segmentation"
    assert final["val_split"] == "val" and final["score"] == "instance_miou"
    rows = _metrics(tmp_path / "full")
    best_row = max(rows, key=lambda r: r["val_instance_miou"])
    assert cli_main(["evaluate", str(tmp_path / "full" / "best.safetensors")]) == 0
    text = capsys.readouterr().out
    assert "instance mIoU" in text and "class mIoU" in text and "Chair" in text
    result = evaluate_checkpoint(tmp_path / "full" / "best.safetensors", device="cpu")
    assert result["instance_miou"] == pytest.approx(best_row["val_instance_miou"])
    assert result["class_miou"] == pytest.approx(best_row["val_class_miou"])
    # the categories without shapes have no mIoU
    assert result["per_class"]["Bag"] is None and result["per_class"]["Chair"] is not None


def test_segmentation_batches_are_fixed_size_crops_seeded_by_epoch_and_sample(voc):
    data = TD.load_split(detect(voc), "train")
    loaders = TD.task_loaders(SemanticSegmentation(), data, 4, seed=3, rank=0, world_size=1,
                              workers=0, crop_size=(24, 24), scale=(0.5, 2.0), flip=True,
                              num_points=0, normalize=None)
    loader = loaders.loader
    loader.set_epoch(1)
    first = list(loader)
    again = list(loader)
    for ((x1,), m1), ((x2,), m2) in zip(first, again, strict=True):
        assert x1.shape == (4, 3, 24, 24) and x1.dtype == torch.uint8
        assert m1.shape == (4, 24, 24) and m1.dtype == torch.int64
        assert torch.equal(x1, x2) and torch.equal(m1, m2)
        assert set(m1.unique().tolist()) <= {0, 1, 2, 255}
    resumed = list(loader.iter_from(1))  # a resume at batch 1 sees the same crops
    assert torch.equal(resumed[0][1], first[1][1])
    loader.set_epoch(2)
    assert not torch.equal(next(iter(loader))[1], first[0][1])


def test_training_accuracy_counts_only_non_ignored_pixels():
    batches = TD.TaskBatches(SemanticSegmentation())
    target = torch.tensor([[[0, 1, 255], [2, 2, 255]]])  # (1, 2, 3): 4 counted pixels
    pred = torch.tensor([[[0, 2, 1], [2, 0, 0]]])
    logits = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float()
    correct, count = batches.hits(logits, ((torch.zeros(1),), target))
    assert (int(correct), int(count)) == (2, 4)  # (0,0) and (1,0) right; 255s not counted


class _ColourModel(torch.nn.Module):
    """Predicts the class written into the red channel (x * 255): one-hot logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pred = (x[:, 0] * 255).round().long()
        return torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float() * 10


def test_segmentation_evaluation_equals_a_hand_count():
    # image 1 (2x3): target 0 0 1 / 1 2 255, predicted 0 1 1 / 1 0 2
    # image 2 (2x2, another size): target 2 2 / 0 255, predicted 2 0 / 0 1
    targets = [np.array([[0, 0, 1], [1, 2, 255]], np.uint8), np.array([[2, 2], [0, 255]],
                                                                        np.uint8)]
    preds = [np.array([[0, 1, 1], [1, 0, 2]], np.uint8), np.array([[2, 0], [0, 1]], np.uint8)]
    images = [np.stack([p, p, p]) for p in preds]
    data = SegmentationDataset(images, targets, ["a", "b", "c"], ["x", "y"])
    out = TD.evaluate_task(_ColourModel(), SemanticSegmentation(), data, torch.device("cpu"),
                           batch_size=4, num_classes=3,
                           normalize=TD.seg_normalize((0, 0, 0), (1, 1, 1)))
    # counted pairs (true, pred): (0,0) (0,1) (1,1) (1,1) (2,0) | (2,2) (2,0) (0,0)
    # class 0: tp 2, row 3, col 4 -> 2/5; class 1: tp 2, row 2, col 3 -> 2/3;
    # class 2: tp 1, row 3, col 1 -> 1/3
    assert out["miou"] == pytest.approx(100 * (2 / 5 + 2 / 3 + 1 / 3) / 3)
    assert out["pixel_accuracy"] == pytest.approx(100 * 5 / 8)
    assert out["mean_class_accuracy"] == pytest.approx(100 * (2 / 3 + 1 + 1 / 3) / 3)
    assert out["count"] == 2
    assert out["per_class"] == pytest.approx([40.0, 200 / 3, 100 / 3])


def test_part_segmentation_metrics_equal_a_hand_count():
    category_parts = [[0, 1], [2, 3, 4]]
    # shape 1 (category 0): target 0 0 1 1, predicted 0 1 1 1 -> IoU part 0: 1/2, part 1: 2/3
    # shape 2 (category 1): target 2 2 3 3, predicted 2 2 3 4 -> 2: 1, 3: 1/2, 4: 0/1 = 0
    # shape 3 (category 1): target 2 2 2 2, predicted 2 2 2 2 -> 2: 1, 3 and 4 absent: 1, 1
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 2, 2]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 2, 3, 4], [2, 2, 2, 2]])
    logits = torch.nn.functional.one_hot(pred, 5).permute(0, 2, 1).float()
    logits[0, 3] = 5.0  # a label of the other category scores highest: left out
    task = PointCloudPartSegmentation(category_parts=category_parts)
    meter = task.meter(5)
    meter.update(logits, target, category=torch.tensor([0, 1, 1]))
    out = meter.summary()
    s1, s2, s3 = (1 / 2 + 2 / 3) / 2, (1 + 1 / 2 + 0) / 3, 1.0
    assert out["instance_miou"] == pytest.approx(100 * (s1 + s2 + s3) / 3)
    assert out["class_miou"] == pytest.approx(100 * (s1 + (s2 + s3) / 2) / 2)
    assert out["point_accuracy"] == pytest.approx(100 * 10 / 12)
    assert meter.per_class() == pytest.approx([100 * s1, 100 * (s2 + s3) / 2])
    with pytest.raises(ValueError, match="category"):
        meter.update(logits, target)
    assert task_for("pct_ea_partseg").score == "instance_miou"


def test_point_batches_are_channels_first_and_part_seg_passes_the_category():
    data = PointCloudDataset(np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3),
                             np.array([1, 0]), ["a", "b"], parts=np.array([[2] * 5, [0] * 5]),
                             category_parts=[[0, 1], [2]])
    (x, category), parts = TD.point_batch(data, np.array([0, 1]), 4, part_seg=True)
    assert x.shape == (2, 3, 4) and torch.equal(x[0, :, 1], torch.tensor([3.0, 4.0, 5.0]))
    assert category.tolist() == [1, 0] and parts.shape == (2, 4)
    (x,), labels = TD.point_batch(data, np.array([1]), 5, part_seg=False)
    assert x.shape == (1, 3, 5) and labels.tolist() == [0]


@pytest.mark.parametrize("args, words", [
    (["--model", "eanet_resnet26_small", "--dataset", "procedural-points"],
     ["semantic segmentation", "procedural point-cloud set"]),
    (["--model", "spct", "--data", "VOC"], ["pointcloud classification", "VOC-layout"]),
    (["--model", "pct_partseg", "--data", "VOC"], ["part segmentation", "VOC-layout"]),
    (["--model", "lavit_tiny_cifar", "--data", "VOC"],
     ["image classification", "VOC-layout"]),
    (["--model", "eanet_resnet26_small", "--data", "SHAPENET"],
     ["semantic segmentation", "ShapeNet-Part"]),
])
def test_a_model_data_mismatch_is_refused_in_one_line(voc, shapenet, tmp_path, capsys, args,
                                                      words):
    args = [{"VOC": str(voc), "SHAPENET": str(shapenet)}.get(a, a) for a in args]
    rc = cli_main(["train", *args, "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and err.count("\n") == 1
    assert all(w in err for w in words), err
    assert not (tmp_path / "run").exists()


def test_evaluate_refuses_data_of_another_task(voc, tmp_path, capsys):
    train(_points_cfg(tmp_path / "run", epochs=1, max_steps_per_epoch=1))
    rc = cli_main(["evaluate", str(tmp_path / "run" / "best.safetensors"), "--data", str(voc)])
    err = capsys.readouterr().err
    assert rc == 1 and "pointcloud classification" in err and "VOC-layout" in err
    assert cli_main(["evaluate"]) == 1
    assert "one checkpoint" in capsys.readouterr().err


def test_evaluate_no_cache_reads_and_writes_no_decode_cache(tiny_net, tmp_path, capsys):
    folder = tmp_path / "shapes"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (folder / split / c).mkdir(parents=True)
            for k in range(4):
                grey = rng.integers(0, 255, (28, 28), np.uint8)
                Image.fromarray(grey, mode="L").save(folder / split / c / f"{k}.png")
    train(TrainConfig(model=tiny_net, data=str(folder), out=str(tmp_path / "run"), epochs=1,
                      batch_size=4, quiet=True, workers=0, device="cpu", no_cache=True,
                      cache_dir=str(tmp_path / "cache")))
    assert not (tmp_path / "cache").exists()
    ckpt = str(tmp_path / "run" / "best.safetensors")
    assert cli_main(["evaluate", ckpt, "--no-cache", "--cache-dir", str(tmp_path / "cache"),
                     "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["count"] == 8 and set(result["per_class"]) == {"a", "b"}
    assert not (tmp_path / "cache").exists()
    assert cli_main(["evaluate", ckpt, "--cache-dir", str(tmp_path / "cache"), "--json"]) == 0
    assert (tmp_path / "cache").exists()  # without the flag the decoded split is cached
