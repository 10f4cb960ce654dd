"""Semantic-segmentation datasets: Pascal VOC's layout and image/mask folder pairs.

Layouts read:

- Pascal VOC: ``ROOT/JPEGImages/ID.jpg``, ``ROOT/SegmentationClass/ID.png`` (palette
  PNGs whose palette indices are the class labels, 255 the "ignore" border), and
  ``ROOT/ImageSets/Segmentation/{train,val}.txt`` listing the IDs of each split. Classes:
  ``ROOT/classes.txt`` (one name a line, label order) when present, else VOC's 21.
- Folder pairs: ``ROOT/images/NAME.{jpg,png,...}`` and ``ROOT/masks/NAME.png``, matched by
  name (optionally under a split folder ``ROOT/SPLIT/images``).

Masks must be palette (``P``) or grey (``L``) PNGs: their pixel values are the labels.
Each sample is validated (image and mask of the same size, labels below the number of
classes or equal to ``ignore_index``) with a :class:`~beyond_attention.data.base.DatasetError`
that names the file. Images are decoded to RGB uint8 ``(3, H, W)``, masks to uint8
``(H, W)``; sizes may differ between samples (crop them with
:class:`~beyond_attention.data.seg_augment.SegmentationAugment`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .base import DatasetError

__all__ = [
    "IGNORE_INDEX",
    "VOC_CLASSES",
    "SegmentationDataset",
    "load_mask_folder",
    "load_voc",
    "voc_palette",
]

IGNORE_INDEX = 255
VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def voc_palette() -> list[int]:
    """Pascal VOC's 256-colour palette (flat RGB list), as its palette PNGs carry it."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


@dataclass
class SegmentationDataset:
    """One split of a segmentation dataset, held in memory.

    Attributes:
        images: list of ``(3, H_i, W_i)`` uint8 RGB arrays.
        masks: list of ``(H_i, W_i)`` uint8 label arrays (``ignore_index`` = not counted).
        classes: class names, label order (background first where there is one).
        ids: the sample names (file stems).
        ignore_index: the label left out of losses and metrics (255).
    """

    images: list[np.ndarray]
    masks: list[np.ndarray]
    classes: list[str]
    ids: list[str]
    ignore_index: int = IGNORE_INDEX
    name: str = "segmentation"
    split: str = "train"
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (len(self.images) == len(self.masks) == len(self.ids)):
            raise DatasetError(f"{self.source}: {len(self.images)} images, {len(self.masks)} "
                               f"masks and {len(self.ids)} ids")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.images[i], self.masks[i]


def _open_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")).transpose(2, 0, 1).copy()
    except (OSError, UnidentifiedImageError) as err:
        raise DatasetError(f"{path}: cannot decode the image ({err})") from err


def _open_mask(path: Path, num_classes: int, ignore_index: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise DatasetError(f"{path}: a mask must be a palette (P) or grey (L) PNG whose "
                                   f"values are labels, got mode {im.mode}")
            mask = np.asarray(im).copy()
    except (OSError, UnidentifiedImageError) as err:
        raise DatasetError(f"{path}: cannot decode the mask ({err})") from err
    bad = (mask >= num_classes) & (mask != ignore_index)
    if bad.any():
        raise DatasetError(
            f"{path}: labels must lie in [0, {num_classes}) or equal ignore_index="
            f"{ignore_index}; found {sorted(set(mask[bad].tolist()))[:5]}"
        )
    return mask


def _load_pairs(pairs: list[tuple[str, Path, Path]], classes: list[str], ignore_index: int
                ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    images, masks = [], []
    for _, image_path, mask_path in pairs:
        image = _open_image(image_path)
        mask = _open_mask(mask_path, len(classes), ignore_index)
        if image.shape[1:] != mask.shape:
            raise DatasetError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its "
                               f"image {image_path.name} is {image.shape[2]}x{image.shape[1]}")
        images.append(image)
        masks.append(mask)
    return images, masks


def _classes(root: Path, default: list[str] | None) -> list[str]:
    path = root / "classes.txt"
    if path.is_file():
        names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        if not names:
            raise DatasetError(f"{path}: no class names")
        return names
    if default is None:
        raise DatasetError(f"{root}: no classes.txt; pass classes=")
    return list(default)


def load_voc(root: str | Path, split: str = "train", classes: list[str] | None = None,
             ignore_index: int = IGNORE_INDEX) -> SegmentationDataset:
    """A split of a dataset in Pascal VOC's layout (see the module docstring)."""
    root = Path(root)
    names = classes if classes is not None else _classes(root, VOC_CLASSES)
    list_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not list_file.is_file():
        raise DatasetError(f"{list_file}: split list not found (VOC layout: "
                           "ImageSets/Segmentation/{train,val}.txt)")
    ids = [ln.split()[0] for ln in list_file.read_text().splitlines() if ln.strip()]
    pairs = []
    for i in ids:
        image = root / "JPEGImages" / f"{i}.jpg"
        mask = root / "SegmentationClass" / f"{i}.png"
        for p in (image, mask):
            if not p.is_file():
                raise DatasetError(f"{list_file} lists {i!r} but {p} does not exist")
        pairs.append((i, image, mask))
    images, masks = _load_pairs(pairs, names, ignore_index)
    return SegmentationDataset(images, masks, names, ids, ignore_index, name=root.name,
                               split=split, source=str(root))


def load_mask_folder(root: str | Path, split: str | None = None,
                     classes: list[str] | None = None, ignore_index: int = IGNORE_INDEX
                     ) -> SegmentationDataset:
    """Images and masks matched by name: ``ROOT[/SPLIT]/images/*`` and ``.../masks/*.png``.

    ``classes``: the names, else ``ROOT/classes.txt``.
    """
    root = Path(root)
    base = root / split if split else root
    names = classes if classes is not None else _classes(root, None)
    image_dir, mask_dir = base / "images", base / "masks"
    if not image_dir.is_dir() or not mask_dir.is_dir():
        raise DatasetError(f"{base}: expected images/ and masks/ folders")
    images = {p.stem: p for p in sorted(image_dir.iterdir()) if p.suffix.lower() in
              IMAGE_SUFFIXES}
    masks = {p.stem: p for p in sorted(mask_dir.glob("*.png"))}
    missing = sorted(set(images) ^ set(masks))
    if missing:
        raise DatasetError(f"{base}: images and masks do not pair up; unmatched: {missing[:5]}")
    if not images:
        raise DatasetError(f"{base}: no images found")
    pairs = [(k, images[k], masks[k]) for k in sorted(images)]
    imgs, msks = _load_pairs(pairs, names, ignore_index)
    return SegmentationDataset(imgs, msks, names, [k for k, _, _ in pairs], ignore_index,
                               name=root.name, split=split or "all", source=str(base))
