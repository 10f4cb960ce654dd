"""The in-memory dataset every loader returns: uint8 images, int64 labels, class names."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


class DatasetError(ValueError):
    """A dataset file is missing, truncated, corrupt or laid out unexpectedly.

    The message names the file and says what to do about it.
    """


@dataclass
class ImageDataset:
    """One split of an image-classification dataset, held in memory.

    Attributes:
        images: ``(N, C, H, W)`` uint8 array (C is 1 for grey images, 3 for colour).
        labels: ``(N,)`` int64 array of class indices in ``[0, len(classes))``.
        classes: class names; ``labels`` index into this list.
        name: the dataset's name (``cifar10``, ``fashion-mnist``, or the file's stem).
        split: the split's name as the source calls it (``train``, ``test``, ``val``, ...).
        source: where the data came from (a path or URL), for the record.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    name: str = "dataset"
    split: str = "train"
    source: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.images, np.ndarray) or self.images.ndim != 4:
            raise ValueError(
                f"images must be a (N, C, H, W) numpy array, got "
                f"{getattr(self.images, 'shape', type(self.images).__name__)}"
            )
        if self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {self.images.dtype}")
        if self.images.shape[1] not in (1, 3):
            raise ValueError(
                f"images must have 1 or 3 channels in dimension 1, got {self.images.shape}"
            )
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must have shape ({self.images.shape[0]},) to match images, "
                f"got {self.labels.shape}"
            )
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ValueError(
                f"labels must lie in [0, {len(self.classes)}) for {len(self.classes)} classes, "
                f"got range [{self.labels.min()}, {self.labels.max()}]"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """``(image (C, H, W) uint8 tensor, label)``, for use with any torch DataLoader."""
        return torch.from_numpy(self.images[index]), int(self.labels[index])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self, n: int | None, seed: int = 0) -> ImageDataset:
        """A fixed random subset of ``n`` samples (all if ``n`` is None or >= len).

        The subset is drawn with its own generator (``seed``), independent of the training
        seed, and keeps the source order, so ``--limit-train 1000`` picks the same images in
        every run and covers every class of a class-sorted folder.
        """
        if n is None or n >= len(self):
            return self
        if n <= 0:
            raise ValueError(f"subset size must be positive, got {n}")
        keep = np.sort(np.random.default_rng(seed).permutation(len(self))[:n])
        return ImageDataset(
            self.images[keep], self.labels[keep], list(self.classes), self.name, self.split,
            self.source, dict(self.extra),
        )

    def channel_stats(
        self, max_samples: int = 10000
    ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of the images scaled to [0, 1] (on up to ``max_samples``)."""
        x = self.subset(max_samples).images.astype(np.float64) / 255.0
        mean = x.mean(axis=(0, 2, 3))
        std = x.std(axis=(0, 2, 3))
        return tuple(float(m) for m in mean), tuple(float(max(s, 1e-3)) for s in std)

    def __repr__(self) -> str:
        c, h, w = self.images.shape[1:]
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"image=({c}, {h}, {w}), classes={len(self.classes)})"
        )
