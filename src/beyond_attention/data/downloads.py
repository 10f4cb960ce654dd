"""Downloads of the standard datasets from their official addresses, checksum-verified.

Only run when the user asks (``--download``). Each file is streamed to ``NAME.part`` in the
target directory, its MD5 compared with the published one, and only then moved into place
(:func:`os.replace`); a mismatch deletes the partial file and raises an error that names
the file, both checksums and the address. Mirrors are tried in order.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .base import DatasetError
from .cache import resolve_cache_dir


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name, published MD5, and whether to unpack it (a tar)."""

    name: str
    md5: str
    extract: bool = False


@dataclass(frozen=True)
class DownloadSpec:
    """Where a dataset is published: base URLs (mirrors, tried in order) and its files.

    ``root`` is the path, relative to the download directory, that the loaders read after
    the download (the extracted batch folder for CIFAR, the folder of IDX files for MNIST).
    """

    mirrors: tuple[str, ...]
    files: tuple[RemoteFile, ...]
    root: str


DOWNLOADS: dict[str, DownloadSpec] = {
    "cifar10": DownloadSpec(
        ("https://www.cs.toronto.edu/~kriz/",),
        (RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", True),),
        "cifar-10-batches-py",
    ),
    "cifar100": DownloadSpec(
        ("https://www.cs.toronto.edu/~kriz/",),
        (RemoteFile("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", True),),
        "cifar-100-python",
    ),
    "mnist": DownloadSpec(
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",
         "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        (
            RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
        ".",
    ),
    "fashion-mnist": DownloadSpec(
        ("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
         "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
        (
            RemoteFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            RemoteFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        ),
        ".",
    ),
}


def md5_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex MD5 of a file."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    """Where ``name`` is downloaded to: ``CACHE/datasets/NAME``."""
    return resolve_cache_dir(cache_dir) / "datasets" / name


def _fetch(url: str, dest: Path, md5: str, timeout: float) -> None:
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:
            while block := r.read(1 << 20):
                f.write(block)
        got = md5_file(part)
        if got != md5:
            raise DatasetError(
                f"checksum mismatch for {dest.name} from {url}: MD5 {got}, expected {md5}; "
                f"the download is corrupt or the file changed upstream (nothing was kept)"
            )
        os.replace(part, dest)
    finally:
        with contextlib.suppress(OSError):
            part.unlink()


def download(name: str, cache_dir: str | Path | None = None, timeout: float = 60.0,
             quiet: bool = False) -> Path:
    """Download (if not already there) and verify dataset ``name``; return the path to load.

    Args:
        name: a key of :data:`DOWNLOADS` (``cifar10``, ``cifar100``, ``mnist``,
            ``fashion-mnist``).
        cache_dir: cache root; files go to ``CACHE/datasets/NAME``.
        timeout: seconds per connection attempt.
        quiet: print nothing.

    Raises:
        DatasetError: unknown name, every mirror failed, or a checksum did not match.
    """
    if name not in DOWNLOADS:
        raise DatasetError(
            f"no download is known for dataset {name!r}; downloadable: {sorted(DOWNLOADS)}"
        )
    spec = DOWNLOADS[name]
    target = download_dir(name, cache_dir)
    target.mkdir(parents=True, exist_ok=True)
    for rf in spec.files:
        dest = target / rf.name
        if dest.is_file() and md5_file(dest) == rf.md5:
            continue
        errors = []
        for base in spec.mirrors:
            url = base + rf.name
            if not quiet:
                print(f"downloading {url}", flush=True)
            try:
                _fetch(url, dest, rf.md5, timeout)
                break
            except (urllib.error.URLError, OSError) as e:
                errors.append(f"{url}: {e}")
        else:
            raise DatasetError(
                f"could not download {rf.name} for {name}: " + "; ".join(errors)
                + f". Download it by hand into {target} or pass --data PATH"
            )
        if rf.extract and not (target / spec.root).exists():
            try:
                with tarfile.open(dest, "r:*") as tar:
                    if hasattr(tarfile, "data_filter"):
                        tar.extractall(target, filter="data")
                    else:  # pragma: no cover - Python without extraction filters
                        tar.extractall(target)
            except (tarfile.TarError, OSError) as e:
                raise DatasetError(f"cannot unpack {dest}: {e}") from None
    return (target / spec.root).resolve()
