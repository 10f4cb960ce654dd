"""Checkpoints rebuild their model; predict prepares images as validation does."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from deploy_helpers import CLASSES, MODEL, SIZE, write_checkpoint, write_image
from PIL import Image

from beyond_attention.cli import main
from beyond_attention.data import decode_image_folder
from beyond_attention.inference import (
    InferenceError,
    Preprocess,
    find_images,
    load_for_inference,
    predict,
)
from beyond_attention.train.checkpoint import CheckpointError


def test_checkpoint_records_what_inference_needs(checkpoint):
    path, net = checkpoint
    model, meta = load_for_inference(path)
    assert meta["model"] == MODEL and meta["classes"] == CLASSES
    assert meta["img_size"] == [SIZE, SIZE] and meta["in_chans"] == 3
    assert meta["version"] and meta["model_kwargs"] == {}
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), rtol=0, atol=0)
    assert not model.training


def test_old_checkpoints_without_the_new_keys_still_load(tmp_path):
    path = tmp_path / "old.safetensors"
    net = write_checkpoint(path, old_format=True)
    model, meta = load_for_inference(path)
    assert meta["version"] is None and meta["data"] is None and meta["model_kwargs"] == {}
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), rtol=0, atol=0)


def test_another_models_checkpoint_and_a_corrupt_one_are_refused(checkpoint, tmp_path):
    path, _ = checkpoint
    with pytest.raises(CheckpointError, match="resnet26_cifar.*not 'vit_tiny_cifar'"):
        load_for_inference(path, model="vit_tiny_cifar")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_for_inference(bad)


def _by_formula(pixels: np.ndarray, size: int, mean, std) -> torch.Tensor:
    """Resize the shorter side to ``size`` (bicubic), centre-crop, normalise: written out."""
    im = Image.fromarray(pixels)
    w, h = im.size
    s = size / min(w, h)
    im = im.resize((max(size, round(w * s)), max(size, round(h * s))),
                   Image.Resampling.BICUBIC)
    left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
    arr = np.asarray(im.crop((left, top, left + size, top + size))).astype(np.float32) / 255
    x = torch.from_numpy(arr).permute(2, 0, 1)
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def test_predict_matches_the_formula_on_images_written_here(checkpoint, tmp_path):
    path, net = checkpoint
    pix = [write_image(tmp_path / "img" / "a.png", (SIZE, SIZE), 1),
           write_image(tmp_path / "img" / "sub" / "b.png", (40, 24), 2),
           write_image(tmp_path / "img" / "c.png", (SIZE + 3, SIZE), 3)]
    model, meta = load_for_inference(path)
    files = find_images([tmp_path / "img"])
    assert [f.name for f in files] == ["a.png", "c.png", "b.png"]  # sorted paths, recursive
    rows = predict(model, meta, files, topk=2, batch_size=2)
    x = torch.stack([_by_formula(p, SIZE, meta["mean"], meta["std"])
                     for p in (pix[0], pix[2], pix[1])])
    with torch.no_grad():
        probs = net(x).softmax(-1)
    for row, p in zip(rows, probs, strict=True):
        top = p.topk(2)
        assert [t["index"] for t in row["top"]] == top.indices.tolist()
        assert [t["class"] for t in row["top"]] == [CLASSES[i] for i in top.indices]
        np.testing.assert_allclose([t["prob"] for t in row["top"]], top.values, atol=2e-6)


def test_preprocessing_equals_the_image_folder_reader(tmp_path):
    write_image(tmp_path / "f" / "val" / "x" / "0.png", (37, 23), 5)
    write_image(tmp_path / "f" / "val" / "y" / "0.png", (SIZE, SIZE), 6)  # two classes
    splits, _, _ = decode_image_folder(tmp_path / "f", img_size=SIZE, workers=1)
    prep = Preprocess((SIZE, SIZE), (0.5,) * 3, (0.5,) * 3, "RGB", draft=True)
    got = prep.load([tmp_path / "f" / "val" / "x" / "0.png"])
    np.testing.assert_array_equal(got.numpy()[0], splits["val"][0][0])


def test_grey_model_reads_colour_images_as_grey(tmp_path):
    path = tmp_path / "grey.safetensors"
    write_checkpoint(path, in_chans=1)
    write_image(tmp_path / "c.png", (SIZE, SIZE), 4)
    model, meta = load_for_inference(path)
    assert Preprocess.from_metadata(meta).load([tmp_path / "c.png"]).shape == (1, 1, SIZE, SIZE)


def test_predict_command_json_and_glob(checkpoint, tmp_path, capsys):
    path, _ = checkpoint
    for i in range(3):
        write_image(tmp_path / f"p{i}.png", (SIZE, SIZE), i)
    assert main(["predict", str(path), str(tmp_path / "p*.png"), "--json", "--topk", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["image"].rsplit("/", 1)[1] for r in out["predictions"]] == \
        ["p0.png", "p1.png", "p2.png"]
    for r in out["predictions"]:
        assert sorted(t["class"] for t in r["top"]) == sorted(CLASSES)
        assert abs(sum(t["prob"] for t in r["top"]) - 1) < 1e-5
    assert main(["predict", str(path), str(tmp_path / "p0.png")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["image", "rank", "class", "probability"]
    assert len(table) == 2 + 3


def test_undecodable_image_is_named_and_nothing_is_printed(checkpoint, tmp_path, capsys):
    path, _ = checkpoint
    write_image(tmp_path / "good.png", (SIZE, SIZE), 0)
    (tmp_path / "broken.jpg").write_bytes(b"not an image at all")
    argv = ["predict", str(path), str(tmp_path / "good.png"), str(tmp_path / "broken.jpg")]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert re.fullmatch(r"error: cannot decode image .*broken\.jpg.*\n", captured.err)
    with pytest.raises(InferenceError, match=r"cannot decode image .*broken\.jpg"):
        main(["--debug", *argv])
    with pytest.raises(InferenceError, match="does not exist"):
        find_images([tmp_path / "missing.png"])
    with pytest.raises(InferenceError, match="matches no files"):
        find_images([str(tmp_path / "*.gif")])


def test_predict_refuses_a_point_cloud_checkpoint_before_reading_images(tmp_path, capsys):
    from beyond_attention import create_model
    from beyond_attention.train.checkpoint import model_metadata, save_safetensors

    torch.manual_seed(0)
    model = create_model("spct", num_classes=3)
    meta = model_metadata("spct", 3, 3, (3, 64), [0.0], [1.0], ["a", "b", "c"],
                          task="pointcloud_classification")
    path = tmp_path / "points.safetensors"
    save_safetensors(path, model.state_dict(), meta)
    argv = ["predict", str(path), str(tmp_path / "missing.png")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: predict ranks the classes of image-classification "
                        r"checkpoints; .*points\.safetensors is a pointcloud_classification "
                        r"checkpoint .*evaluate.*\n", err)
