"""An offline segmentation dataset composed from real Fashion-MNIST images.

Every image is a canvas with a faint noise background on which a few Fashion-MNIST items
(from the IDX files) are pasted at random scales and places; later items cover earlier
ones. An item's pixels (those brighter than ``threshold`` after resizing) are labelled
with its class + 1, the rest is background 0. The training split draws its items from
Fashion-MNIST's training images, the validation split from its test images. The result
is written in Pascal VOC's layout (``JPEGImages/``, ``SegmentationClass/`` palette PNGs,
``ImageSets/Segmentation/{train,val}.txt``, plus ``classes.txt``), so
:func:`~beyond_attention.data.segmentation.load_voc` reads it. Deterministic by ``seed``.

Command line::

    python -m beyond_attention.data.seg_compose OUT_DIR --fashion FASHION_MNIST_DIR \
        [--train 200] [--val 50] [--size 96] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image

from ..io import atomic_write_bytes
from .base import DatasetError
from .idx import FASHION_MNIST_CLASSES, idx_splits, read_idx
from .segmentation import voc_palette

__all__ = ["compose_fashion_segmentation", "compose_image", "main"]


def compose_image(
    items: np.ndarray, labels: np.ndarray, rng: np.random.Generator, size: int = 96,
    num_items: tuple[int, int] = (2, 4), scale: tuple[float, float] = (0.75, 2.0),
    threshold: int = 40,
) -> tuple[np.ndarray, np.ndarray]:
    """One canvas: (size, size) uint8 grey image and (size, size) uint8 label mask."""
    canvas = rng.normal(20.0, 8.0, (size, size)).clip(0, 255)
    mask = np.zeros((size, size), dtype=np.uint8)
    for _ in range(int(rng.integers(num_items[0], num_items[1] + 1))):
        i = int(rng.integers(len(items)))
        side = min(size, max(8, round(items.shape[1] * rng.uniform(*scale))))
        item = np.asarray(Image.fromarray(items[i]).resize((side, side), Image.BILINEAR))
        top, left = (int(v) for v in rng.integers(0, size - side + 1, 2))
        fg = item > threshold
        canvas[top:top + side, left:left + side][fg] = item[fg]
        mask[top:top + side, left:left + side][fg] = labels[i] + 1
    return canvas.round().astype(np.uint8), mask


def _png(mask: np.ndarray) -> bytes:
    im = Image.fromarray(mask, mode="P")
    im.putpalette(voc_palette())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).convert("RGB").save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def compose_fashion_segmentation(
    out_dir: str | Path, fashion_dir: str | Path, num_train: int = 200, num_val: int = 50,
    size: int = 96, seed: int = 0, **kwargs: object,
) -> Path:
    """Write the composed dataset to ``out_dir`` (VOC layout); returns ``out_dir``.

    ``kwargs`` go to :func:`compose_image` (``num_items``, ``scale``, ``threshold``).
    """
    out = Path(out_dir)
    splits = idx_splits(fashion_dir)
    if "train" not in splits or "test" not in splits or None in (splits["train"][1],
                                                                 splits["test"][1]):
        raise DatasetError(f"{fashion_dir}: Fashion-MNIST train and t10k image and label IDX "
                           "files are needed")
    if size < 8 or num_train < 0 or num_val < 0:
        raise ValueError(f"size must be >= 8 and counts >= 0, got {size}, {num_train}, "
                         f"{num_val}")
    rng = np.random.default_rng(seed)
    for split, source, count in (("train", "train", num_train), ("val", "test", num_val)):
        images_path, labels_path = splits[source]
        items, labels = read_idx(images_path, ndim=3), read_idx(labels_path, ndim=1)
        ids = []
        for k in range(count):
            image, mask = compose_image(items, labels, rng, size, **kwargs)  # type: ignore[arg-type]
            name = f"{split}_{k:05d}"
            atomic_write_bytes(out / "JPEGImages" / f"{name}.jpg", _jpeg(image))
            atomic_write_bytes(out / "SegmentationClass" / f"{name}.png", _png(mask))
            ids.append(name)
        atomic_write_bytes(out / "ImageSets" / "Segmentation" / f"{split}.txt",
                           "".join(f"{i}\n" for i in ids).encode())
    atomic_write_bytes(out / "classes.txt",
                       "".join(f"{c}\n" for c in ["background", *FASHION_MNIST_CLASSES]).encode())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m beyond_attention.data.seg_compose",
        description="Compose a VOC-layout segmentation dataset from Fashion-MNIST items.")
    p.add_argument("out_dir")
    p.add_argument("--fashion", required=True, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--train", type=int, default=200, help="training images (default 200)")
    p.add_argument("--val", type=int, default=50, help="validation images (default 50)")
    p.add_argument("--size", type=int, default=96, help="canvas side in pixels (default 96)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = compose_fashion_segmentation(args.out_dir, args.fashion, args.train, args.val,
                                       args.size, args.seed)
    print(f"wrote {args.train} train and {args.val} val images to {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
