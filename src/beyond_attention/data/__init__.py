"""Datasets for training and evaluation, held in memory as uint8 arrays.

Readers: CIFAR-10/100 (official python format, directory or ``.tar.gz``, read without
unpickling arbitrary objects), MNIST/Fashion-MNIST IDX files (gz or raw), image folders
``SPLIT/CLASS/IMAGE`` and tars of them (decoded once, cached as ``.npy``). Finding data:
:func:`find_dataset` (explicit path, ``BEYOND_ATTENTION_DATA``, standard places, optional
checksum-verified download). Loading: :class:`BatchLoader` (seeded, sharded, resumable).
Augmentation: :class:`TrainAugment` and :class:`Normalize`, batched on the device.

Example::

    from beyond_attention.data import load_dataset, BatchLoader
    train = load_dataset(split="train")           # the default dataset, found offline
    for images, labels in BatchLoader(train, 128, shuffle=True):
        ...                                          # (128, C, H, W) uint8, (128,) int64
"""

from .augment import Normalize, TrainAugment, mix_batch, one_hot_smooth, to_float
from .base import DatasetError, ImageDataset
from .cache import default_cache_dir
from .cifar import SafeUnpickler, load_cifar
from .downloads import DOWNLOADS, download
from .find import DATA_ENV, DATASET_NAMES, DataSource, detect, find_dataset, load_dataset
from .folder import decode_image_folder, load_image_folder
from .idx import load_idx, read_idx
from .loader import BatchLoader

__all__ = [
    "BatchLoader",
    "DATASET_NAMES",
    "DATA_ENV",
    "DOWNLOADS",
    "DataSource",
    "DatasetError",
    "ImageDataset",
    "Normalize",
    "SafeUnpickler",
    "TrainAugment",
    "decode_image_folder",
    "default_cache_dir",
    "detect",
    "download",
    "find_dataset",
    "load_cifar",
    "load_dataset",
    "load_idx",
    "load_image_folder",
    "mix_batch",
    "one_hot_smooth",
    "read_idx",
    "to_float",
]
