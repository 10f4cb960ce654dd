"""Checkpoints and images written by the deploy tests themselves (helpers; the fixtures
are in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

import beyond_attention.models  # noqa: F401
from beyond_attention import create_model
from beyond_attention.train.checkpoint import model_metadata, save_safetensors

MODEL = "resnet26_cifar"  # small, fast, and has BatchNorm (eval statistics must load)
CLASSES = ["cat", "dog", "ship"]
SIZE = 16


def write_checkpoint(path: Path, *, classes=CLASSES, size=SIZE, in_chans=3, data=None,
                     val_split=None, model=MODEL, seed=0, old_format=False) -> torch.nn.Module:
    """Save random (seeded) weights of ``model`` with training-style metadata; return the
    model. ``old_format`` writes only the keys checkpoints had before version metadata."""
    torch.manual_seed(seed)
    net = create_model(model, num_classes=len(classes), in_chans=in_chans,
                       img_size=(size, size)).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    mean, std = [0.5, 0.4, 0.3][:in_chans], [0.2, 0.25, 0.3][:in_chans]
    meta = model_metadata(model, len(classes), in_chans, (size, size), mean, std, classes,
                          data=data, dataset="auto", val_split=val_split)
    if old_format:
        meta = {k: meta[k] for k in ("format", "model", "num_classes", "in_chans", "img_size",
                                     "mean", "std", "classes")}
    save_safetensors(path, net.state_dict(), {**meta, "checkpoint_id": "0-test"})
    return net


def write_image(path: Path, size: tuple[int, int], seed: int, mode: str = "RGB") -> np.ndarray:
    """A random PNG of ``size`` (W, H); returns its pixels."""
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode).save(path)
    return pixels


def write_folder(root: Path, classes, splits=("train", "val"), per_class=4, size=SIZE) -> Path:
    """An image folder ``SPLIT/CLASS/IMAGE.png``."""
    seed = 0
    for split in splits:
        for cls in classes:
            for i in range(per_class):
                write_image(root / split / cls / f"{i}.png", (size, size), seed)
                seed += 1
    return root
