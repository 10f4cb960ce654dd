"""MNIST and Fashion-MNIST in their IDX file format (gzipped or raw).

An IDX file is a 4-byte magic number ``0x0000TTDD`` (TT the element type, 0x08 for unsigned
bytes; DD the number of dimensions), DD big-endian uint32 sizes, then the elements in C
order. Image files are ``(N, 28, 28)`` ubyte (magic ``0x00000803``), label files ``(N,)``
ubyte (magic ``0x00000801``). A directory holds one pair per split, named
``{prefix}-images-idx3-ubyte[.gz]`` and ``{prefix}-labels-idx1-ubyte[.gz]``; the prefix
``t10k`` is the split ``test``, any other prefix (``train``) names its split.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np

from .base import DatasetError, ImageDataset

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
MNIST_CLASSES = [str(i) for i in range(10)]

_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_FILE_RE = re.compile(r"^(?P<prefix>.+?)-(?P<kind>images|labels)[-.]idx(?P<ndim>\d)-ubyte(\.gz)?$")
_FIX = "delete it and download it again (--download), or pass a good copy with --data"


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"IDX file {path} does not exist") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise DatasetError(f"IDX file {path} is truncated or corrupt ({e}); {_FIX}") from None


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (gzipped or raw) into an array of its declared shape and type.

    Args:
        path: the file.
        ndim: the number of dimensions it must have (3 for images, 1 for labels), or None.

    Raises:
        DatasetError: the file is missing, not gzip-decodable, has a wrong magic number or
            the wrong number of dimensions, or holds fewer or more bytes than its header says.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DatasetError(f"IDX file {path} is {len(data)} bytes, shorter than its header; {_FIX}")
    magic = int.from_bytes(data[:4], "big")
    type_code, dims = data[2], data[3]
    if data[:2] != b"\x00\x00" or type_code not in _IDX_TYPES or dims == 0:
        raise DatasetError(
            f"IDX file {path} has magic number 0x{magic:08X}, which is not an IDX header "
            f"(expected 0x0000TTDD, e.g. 0x00000803 for images, 0x00000801 for labels); {_FIX}"
        )
    if ndim is not None and dims != ndim:
        raise DatasetError(
            f"IDX file {path} has magic number 0x{magic:08X} ({dims} dimensions); expected "
            f"0x{0x0800 + ndim:08X} ({ndim} dimensions); is it the right file?"
        )
    header = 4 + 4 * dims
    if len(data) < header:
        raise DatasetError(f"IDX file {path} is truncated inside its header; {_FIX}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    dtype = _IDX_TYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DatasetError(
            f"IDX file {path} holds {len(data) - header} data bytes but its header declares "
            f"shape {shape} ({expected} bytes): the file is truncated or corrupt; {_FIX}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def idx_splits(directory: str | Path) -> dict[str, tuple[Path, Path | None]]:
    """``{split: (images file, labels file or None)}`` for the IDX files in ``directory``."""
    directory = Path(directory)
    found: dict[str, dict[str, Path]] = {}
    for p in sorted(directory.iterdir()) if directory.is_dir() else []:
        m = _FILE_RE.match(p.name)
        if not m:
            continue
        split = "test" if m["prefix"] == "t10k" else m["prefix"]
        kinds = found.setdefault(split, {})
        # prefer the raw file over the gz when both exist (same content)
        if m["kind"] not in kinds or kinds[m["kind"]].suffix == ".gz":
            kinds[m["kind"]] = p
    return {s: (k["images"], k.get("labels")) for s, k in found.items() if "images" in k}


def guess_idx_name(directory: str | Path) -> str:
    """``fashion-mnist`` when the directory's name says so, else ``mnist``."""
    name = Path(directory).resolve().name.lower().replace("_", "-")
    return "fashion-mnist" if "fashion" in name else "mnist"


def load_idx(directory: str | Path, split: str, name: str | None = None) -> ImageDataset:
    """Load one split of an MNIST-style IDX directory.

    Args:
        directory: folder with ``train-images-idx3-ubyte.gz`` etc.
        split: ``train``, ``test`` (files ``t10k-*``), or another prefix present there.
        name: ``mnist`` or ``fashion-mnist`` (sets the class names); guessed from the
            folder name when None.

    Returns:
        an :class:`ImageDataset` with images ``(N, 1, 28, 28)`` uint8.
    """
    directory = Path(directory)
    splits = idx_splits(directory)
    if split not in splits:
        raise DatasetError(
            f"no IDX files for split {split!r} in {directory} (found splits: "
            f"{sorted(splits) or 'none'}); expected {split if split != 'test' else 't10k'}"
            f"-images-idx3-ubyte[.gz] and the matching -labels-idx1-ubyte[.gz]"
        )
    images_path, labels_path = splits[split]
    if labels_path is None:
        raise DatasetError(
            f"IDX labels for split {split!r} are missing: {images_path} has no matching "
            f"labels file in {directory}"
        )
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1).astype(np.int64)
    if images.dtype != np.uint8:
        raise DatasetError(f"IDX file {images_path} holds {images.dtype}, expected unsigned bytes")
    if len(labels) != len(images):
        raise DatasetError(
            f"{labels_path} has {len(labels)} labels but {images_path} has {len(images)} "
            f"images; the pair does not match"
        )
    name = name or guess_idx_name(directory)
    classes = FASHION_MNIST_CLASSES if name == "fashion-mnist" else MNIST_CLASSES
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DatasetError(
            f"{labels_path} has labels in [{labels.min()}, {labels.max()}], expected 0-9"
        )
    return ImageDataset(
        images[:, None], labels, list(classes), name=name, split=split, source=str(directory)
    )
