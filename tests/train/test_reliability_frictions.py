"""Small frictions of the train command: progress outside a terminal, the images the last
partial batch drops, top-k on fewer than five classes, training without the decode cache."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tiny_model
import torch
from PIL import Image
from safetensors.torch import load_file

from beyond_attention.cli import main as cli_main
from beyond_attention.data import BatchLoader, load_dataset
from beyond_attention.train import TrainConfig, train
from beyond_attention.train.engine import dropped_per_epoch


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(model=tiny_model.NAME, data=str(data), out=str(out), epochs=1, batch_size=32,
                limit_train=128, limit_val=32, quiet=True, workers=0, device="cpu",
                save_every=0)
    base.update(kw)
    return TrainConfig(**base)


def _image_folder(root: Path, classes=("ant", "bee", "cat"), per_class=(12, 4)) -> Path:
    """train/ and val/ folders of small PNGs, each class a different mean colour."""
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "val"), per_class, strict=True):
        for c, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 60, (8, 8, 3)) + 90 * c
                Image.fromarray(pixels.astype(np.uint8)).save(d / f"{i}.png")
    return root


def test_progress_lines_when_the_output_is_not_a_terminal(tiny_net, fashion_dir, tmp_path,
                                                          capsys):
    # capsys: stdout is not a terminal; 4 steps, a line every 2
    train(_cfg(fashion_dir, tmp_path / "a", quiet=False, log_every=2))
    out = capsys.readouterr().out
    assert "epoch 1/1 step 2/4: loss " in out and "img/s, lr " in out
    assert "step 4/4" not in out  # the epoch's own line follows instead
    train(_cfg(fashion_dir, tmp_path / "b", quiet=False, log_every=0))
    assert " step " not in capsys.readouterr().out


def test_the_dropped_images_are_said_once(tiny_net, fashion_dir, tmp_path, capsys):
    final = train(_cfg(fashion_dir, tmp_path / "a", quiet=False, limit_train=100, epochs=2))
    out = capsys.readouterr().out
    assert out.count("the last partial batch drops 4 of the 100 training images") == 1
    assert final["train_images_dropped_per_epoch"] == 4
    train(_cfg(fashion_dir, tmp_path / "b", quiet=False, limit_train=96))
    assert "partial batch" not in capsys.readouterr().out


def test_dropped_count_under_sharding(fashion_dir):
    ds = load_dataset(fashion_dir, "test").subset(100)
    # 2 ranks: 50 each, batches of 16 -> 2 per rank dropped, 4 in all
    loader = BatchLoader(ds, 16, shuffle=True, drop_last=True, rank=0, world_size=2)
    assert dropped_per_epoch(loader) == 4
    assert dropped_per_epoch(BatchLoader(ds, 16, shuffle=True, drop_last=False)) == 0


def test_top_k_on_three_classes_is_top_3_and_named(tiny_net, tmp_path, capsys):
    data = _image_folder(tmp_path / "abc")
    final = train(_cfg(data, tmp_path / "run", batch_size=12, limit_train=None,
                       limit_val=None, quiet=False, cache_dir=str(tmp_path / "cache")))
    assert final["top5_k"] == 3 and final["top5"] == 100.0
    assert "top-3 100.00" in capsys.readouterr().out
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert line["val_top5_k"] == 3


@pytest.mark.parametrize("archive", [False, True])
def test_no_cache_reads_and_writes_no_cache(tiny_net, tmp_path, archive):
    data = _image_folder(tmp_path / "abc")
    if archive:
        tar_path = tmp_path / "abc.tar.gz"
        with tarfile.open(tar_path, "w:gz") as tar:
            tar.add(data, arcname="abc")
        data = tar_path
    cache = tmp_path / "cache"
    final = train(_cfg(data, tmp_path / "a", batch_size=12, limit_train=None,
                       limit_val=None, cache_dir=str(cache), no_cache=True))
    assert final["val_split"] == "val" and final["val_images"] == 12
    assert not cache.exists() or not any(cache.rglob("*"))
    train(_cfg(data, tmp_path / "b", batch_size=12, limit_train=None, limit_val=None,
               cache_dir=str(cache)))
    cached = sorted(p.name for p in cache.rglob("*.npy"))
    assert "train.images.npy" in cached
    # a cache that lies (labels rotated) is what a cached run reads, and --no-cache does not
    labels_file = next(cache.rglob("train.labels.npy"))
    np.save(labels_file, (np.load(labels_file) + 1) % 3)
    train(_cfg(data, tmp_path / "c", batch_size=12, limit_train=None, limit_val=None,
               cache_dir=str(cache)))
    train(_cfg(data, tmp_path / "d", batch_size=12, limit_train=None, limit_val=None,
               cache_dir=str(cache), no_cache=True))
    weights = {k: load_file(tmp_path / k / "last.safetensors") for k in "abcd"}
    same = {k: all(torch.equal(weights["a"][n], w[n]) for n in w) for k, w in weights.items()}
    assert same == {"a": True, "b": True, "c": False, "d": True}
    assert cli_main(["train", "--model", tiny_model.NAME, "--data", str(data), "--no-cache",
                     "--batch-size", "12", "--limit-train", "0", "--limit-val", "0",
                     "--quiet", "--device", "cpu", "--workers", "0", "--out",
                     str(tmp_path / "e"), "--cache-dir", str(tmp_path / "cache2")]) == 0
    assert not (tmp_path / "cache2").exists()
