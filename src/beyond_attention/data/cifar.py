"""CIFAR-10 and CIFAR-100 in the official "python version" format, read without unpickling
arbitrary objects.

The official batches (``cifar-10-batches-py/data_batch_1`` ... ``test_batch``,
``batches.meta``; ``cifar-100-python/train``, ``test``, ``meta``) are Python pickles of a
dict of byte strings, lists of ints and one numpy array. Unpickling runs whatever callables
a pickle names, so this module reads them with :class:`SafeUnpickler`, which resolves only
numpy's array and dtype reconstruction functions and refuses every other global; the pickle
opcodes that build dicts, lists, bytes and ints need no globals. The result is then checked
(uint8 ``(N, 3072)`` data, ``N`` labels) before use.

Both the extracted directory and the official ``.tar.gz`` (read in place, not extracted)
are accepted.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .base import DatasetError, ImageDataset

try:  # numpy >= 2 moved the implementation to numpy._core; old pickles name numpy.core
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy < 2
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"

_ALLOWED: dict[tuple[str, str], Any] = {}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "_reconstruct")] = _multiarray._reconstruct
    _ALLOWED[(_module, "scalar")] = _multiarray.scalar
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    if hasattr(_numeric, "_frombuffer"):
        _ALLOWED[(_module, "_frombuffer")] = _numeric._frombuffer


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a callable outside the allowed set."""


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 uses it to pickle bytes at protocol 2, latin-1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise RefusedGlobal(f"_codecs.encode with {encoding!r} is not allowed")
    return text.encode("latin1")


_ALLOWED[("_codecs", "encode")] = _latin1_bytes
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = np.dtype


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain containers and numpy arrays.

    ``find_class`` resolves ``numpy.ndarray``, ``numpy.dtype`` and numpy's array
    reconstruction helpers (``_reconstruct``, ``scalar``, ``_frombuffer``, under both the
    ``numpy.core`` and ``numpy._core`` module names) and ``_codecs.encode`` restricted to
    latin-1 (how Python 3 writes bytes at protocol 2), and raises :class:`RefusedGlobal`
    for anything else, so a crafted file cannot run code.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(
                f"global {module}.{name} is not allowed in a CIFAR batch"
            ) from None


def safe_unpickle(data: bytes, what: str) -> dict[str, Any]:
    """Unpickle one CIFAR batch with :class:`SafeUnpickler`; keys are decoded to ``str``.

    Args:
        data: the file's bytes.
        what: the file's name, for error messages.
    """
    try:
        obj = SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except RefusedGlobal as e:
        raise DatasetError(f"CIFAR file {what} refused: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError,
            AttributeError) as e:
        raise DatasetError(
            f"CIFAR file {what} is truncated or corrupt ({type(e).__name__}: {e}); "
            f"download the official archive again (--download) or pass a good copy"
        ) from None
    if not isinstance(obj, dict):
        raise DatasetError(f"CIFAR file {what} holds a {type(obj).__name__}, expected a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _to_str(x: Any) -> str:
    return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)


class _Source:
    """Named batch files from a directory, or from a tar archive read in one streaming pass."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files: dict[str, bytes] | None = None
        if path.is_file():
            self.files = {}
            try:
                with tarfile.open(path, "r|*") as tar:
                    for m in tar:
                        parts = Path(m.name).parts
                        if m.isfile() and len(parts) <= 2:
                            f = tar.extractfile(m)
                            assert f is not None
                            self.files[parts[-1]] = f.read()
            except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
                raise DatasetError(
                    f"CIFAR archive {path} is truncated or corrupt ({e}); download it again "
                    f"(--download) or pass the extracted directory"
                ) from None
        elif not path.is_dir():
            raise DatasetError(f"CIFAR data {path} does not exist")

    def names(self) -> set[str]:
        if self.files is not None:
            return set(self.files)
        return {p.name for p in self.path.iterdir() if p.is_file()}

    def where(self, name: str) -> str:
        return f"{self.path}:{name}" if self.files is not None else str(self.path / name)

    def read(self, name: str) -> bytes:
        try:
            if self.files is not None:
                return self.files[name]
            return (self.path / name).read_bytes()
        except (KeyError, FileNotFoundError):
            raise DatasetError(f"CIFAR file {self.where(name)} is missing") from None


def cifar_root(path: str | Path) -> Path:
    """The batch directory for ``path``: itself, or its ``cifar-10-batches-py`` /
    ``cifar-100-python`` child; archives are returned unchanged."""
    path = Path(path)
    if path.is_dir():
        for child in (CIFAR10_DIR, CIFAR100_DIR):
            if (path / child).is_dir():
                return path / child
    return path


def cifar_variant(names: set[str]) -> str | None:
    """``cifar10``, ``cifar100`` or None, from the file names of a batch directory."""
    if "test_batch" in names or any(n.startswith("data_batch_") for n in names):
        return "cifar10"
    if {"train", "test"} & names and "meta" in names:
        return "cifar100"
    return None


def is_cifar(path: str | Path) -> bool:
    """Whether ``path`` is a CIFAR python-format directory or archive."""
    path = cifar_root(path)
    if path.is_dir():
        return cifar_variant({p.name for p in path.iterdir()}) is not None
    return False


def load_cifar(path: str | Path, split: str) -> ImageDataset:
    """Load one split of CIFAR-10 or CIFAR-100 from the official python-format files.

    Args:
        path: the ``cifar-10-batches-py`` / ``cifar-100-python`` directory, its parent, or
            the official ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``.
        split: ``train`` (CIFAR-10: ``data_batch_1`` ... ``data_batch_5``) or ``test``.

    Returns:
        an :class:`ImageDataset` with images ``(N, 3, 32, 32)`` uint8; CIFAR-100 uses the
        100 fine labels.
    """
    src = _Source(cifar_root(path))
    names = src.names()
    variant = cifar_variant(names)
    if variant is None:
        raise DatasetError(
            f"{src.path} is not a CIFAR python-format directory or archive (expected "
            f"data_batch_1..5, test_batch, batches.meta or train, test, meta)"
        )
    if variant == "cifar10":
        files = {
            "train": sorted((n for n in names if n.startswith("data_batch_")),
                            key=lambda n: int(n.rsplit("_", 1)[1]) if n[-1].isdigit() else 0),
            "test": ["test_batch"],
        }
        meta_name, label_key, names_key = "batches.meta", "labels", "label_names"
    else:
        files = {"train": ["train"], "test": ["test"]}
        meta_name, label_key, names_key = "meta", "fine_labels", "fine_label_names"
    if split not in files:
        raise DatasetError(
            f"{variant} has the splits 'train' and 'test', not {split!r} (in {src.path})"
        )
    if not files[split]:
        raise DatasetError(f"no training batches (data_batch_N) in {src.path}")
    images, labels = [], []
    for name in files[split]:
        batch = safe_unpickle(src.read(name), src.where(name))
        data, lab = batch.get("data"), batch.get(label_key)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
                or data.shape[1] != 3072:
            raise DatasetError(
                f"CIFAR file {src.where(name)} has no uint8 (N, 3072) 'data' array "
                f"(got {getattr(data, 'dtype', type(data).__name__)} "
                f"{getattr(data, 'shape', '')})"
            )
        if lab is None or len(lab) != len(data):
            raise DatasetError(
                f"CIFAR file {src.where(name)} has {len(lab) if lab is not None else 'no'} "
                f"'{label_key}' for {len(data)} images"
            )
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(lab, dtype=np.int64))
    if meta_name in names:
        meta = safe_unpickle(src.read(meta_name), src.where(meta_name))
        classes = [_to_str(c) for c in meta.get(names_key, [])]
    else:
        classes = []
    if not classes:
        classes = CIFAR10_CLASSES if variant == "cifar10" else [str(i) for i in range(100)]
    return ImageDataset(
        np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), classes,
        name=variant, split=split, source=str(src.path),
    )
