"""Image folders (``SPLIT/CLASS/image``), as a directory or a tar archive, decoded once and
cached as arrays.

Layout: ``ROOT/SPLIT/CLASS/IMAGE`` where SPLIT is any name (``train``, ``val``, ``test``),
CLASS a class name and IMAGE a file Pillow can decode (jpg, png, bmp, gif, webp, tif, ppm).
A tar (optionally gzipped) of such a folder is read in one streaming pass, without
extracting it; a single top-level directory inside the archive is skipped over. Class
names are the sorted union of the class folders of all splits, so a label means the same
class in every split.

Decoding tens of thousands of small JPEGs takes seconds, so the decoded arrays are cached:
``CACHE/folders/{stem}-{key}/{split}.images.npy`` (``(N, C, H, W)`` uint8),
``{split}.labels.npy`` (int64) and ``meta.json`` (class names, the source's fingerprint,
the split sizes). The fingerprint of a directory hashes the sorted relative path, size and
mtime of every image and every folder name (so moving an image to another class folder or
renaming a class folder, which keep sizes and mtimes, changes it); that of a tar is its
size and mtime. The key hashes the source's path, fingerprint and the requested image
size; ``meta.json`` is written last, atomically, and a cache whose fingerprint no longer
matches the source is rebuilt. Loading a cached split is one ``numpy.load`` (no pickle).

Channels are decided from the whole folder: the dataset is grey (C = 1) only when every
image is grey (modes 1, L, LA, I, I;16, F), else colour (C = 3) with grey images
replicated to R = G = B. Alpha is dropped (as torchvision's loader does), palette and CMYK
images are converted by Pillow, 16-bit and 32-bit grey are scaled to 8 bits (values above
255 are taken as 16-bit, divided by 257), float images in [0, 1] are scaled by 255.

Degenerate folders are refused or reported: fewer than two classes is a DatasetError (a
one-class classifier "reaches 100%" without learning anything), a SPLIT/CLASS folder
without images is named in a warning, and every decode error names the file (the archive
and the member for a tar). Hidden files and folders (names starting with ".") are
skipped.

Large folders are decoded by a pool of forked processes on machines with 4 or more CPUs
(measured on 2 shared cores: one process decodes the 60,000 CIFAR-10 JPEGs in about 10 s,
two take longer; a thread pool is slower still, Pillow's work per 32 x 32 JPEG being too
small to amortise the hand-offs under the GIL). A cached split of a tar loads in under a
second; a directory's fingerprint adds a ``stat`` of every image (measured on 2 shared
cores: about 2 s for the 60,000 CIFAR-10 JPEGs, a 50,000-image split then loading from
the cache in about 4 s against about 40 s to decode it while the cores were busy).
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import os
import tarfile
import time
import warnings
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from ..io import atomic_save_npy, atomic_write_json
from .base import DatasetError, ImageDataset
from .cache import resolve_cache_dir

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
CACHE_VERSION = 2  # 2: whole-folder channels, path-hashing fingerprint
POOL_MIN_IMAGES = 4096  # smaller folders are decoded in this process
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


def is_tar(path: str | Path) -> bool:
    """Whether ``path`` names a tar archive by its suffix."""
    return str(path).lower().endswith(TAR_SUFFIXES)


def source_stem(path: str | Path) -> str:
    """The file or directory name without a tar suffix (``cifar10-jpg.tar.gz`` ->
    ``cifar10-jpg``)."""
    name = Path(path).name
    for suffix in sorted(TAR_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def _walk(path: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    """``(relative dir, sorted visible subdirs, sorted image names)`` under ``path``."""
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = Path(root).relative_to(path).as_posix()
        yield rel, list(dirs), sorted(n for n in names if _is_image_name(n))


def fingerprint(path: str | Path) -> dict[str, int | str]:
    """What the cache compares to notice a changed source.

    A file (tar): its size and modification time. A directory: the image count, total size
    and a SHA-256 over every visible folder's relative path and every image's relative
    path, size and mtime in sorted order, so moved, renamed, added or removed images and
    renamed class folders all change it (one ``stat`` per image, no reading).
    """
    path = Path(path)
    if path.is_file():
        st = path.stat()
        return {"files": 1, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    digest = hashlib.sha256()
    files = size = 0
    for rel, _dirs, names in _walk(path):
        digest.update(f"D {rel}\n".encode())
        for n in names:
            st = os.stat(path / rel / n)
            files, size = files + 1, size + st.st_size
            digest.update(f"F {rel}/{n}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return {"files": files, "size": size, "sha256": digest.hexdigest()}


Entry = tuple[tuple[str, ...], bytes, str]  # (relative path parts, bytes, where for errors)


def _iter_entries(path: Path, folders: list[tuple[str, ...]]) -> Iterator[Entry]:
    """Every image file of a directory or tar; the relative parts of every visible folder
    (directory entries of a tar) are appended to ``folders``."""
    if path.is_dir():
        for rel, dirs, names in _walk(path):
            base = () if rel == "." else tuple(PurePosixPath(rel).parts)
            folders.extend(base + (d,) for d in dirs)
            for n in names:
                full = path / rel / n
                yield base + (n,), full.read_bytes(), str(full)
        return
    try:
        with tarfile.open(path, "r|*") as tar:
            for m in tar:
                parts = tuple(p for p in PurePosixPath(m.name).parts if p not in (".", "/"))
                if not parts or any(p.startswith(".") for p in parts):
                    continue
                if m.isdir():
                    folders.append(parts)
                    continue
                if not m.isfile() or not _is_image_name(parts[-1]):
                    continue
                f = tar.extractfile(m)
                assert f is not None
                yield parts, f.read(), f"{path} (archive member {m.name})"
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DatasetError(
            f"image archive {path} is truncated or corrupt ({e}); copy or download it again"
        ) from None


def _layout(entries: list[Entry], folders: list[tuple[str, ...]], path: Path
            ) -> tuple[list[tuple[str, str, str, bytes, str]], list[str]]:
    """Map entries to (split, class, name, bytes, where), skipping one common top directory;
    also the ``SPLIT/CLASS`` folders that hold no image."""
    if not entries:
        raise DatasetError(
            f"no image files found in {path}; expected the layout SPLIT/CLASS/IMAGE "
            f"(e.g. train/cat/0001.jpg)"
        )
    depths = {len(p) for p, _, _ in entries}
    tops = {p[0] for p, _, _ in entries}
    strip = 1 if depths == {4} and len(tops) == 1 else 0
    out = []
    for parts, data, where in entries:
        parts = parts[strip:]
        if len(parts) != 3:
            raise DatasetError(
                f"{path}: image {'/'.join(parts)} is not at SPLIT/CLASS/IMAGE depth; an image "
                f"folder must look like train/cat/0001.jpg, test/cat/0002.jpg"
            )
        out.append((parts[0], parts[1], parts[2], data, where))
    out.sort(key=lambda e: (e[0], e[1], e[2]))
    full = {(e[0], e[1]) for e in out}
    empty = sorted({"/".join(f[strip:]) for f in folders
                    if len(f) == strip + 2 and tuple(f[strip:]) not in full
                    and (not strip or f[0] in tops)})
    return out, empty


def _to_8bit(im: Image.Image) -> Image.Image:
    """A Pillow image as mode ``L`` (grey) or ``RGB`` (see the module docstring)."""
    if im.mode in ("L", "RGB"):
        return im
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        a = np.asarray(im).astype(np.float64)
        if im.mode == "F" and a.size and a.max() <= 1.0:
            a = a * 255.0
        elif a.size and a.max() > 255:
            a = a / 257.0  # 16-bit range
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    return im.convert("L" if im.mode in _GREY_MODES else "RGB")


def _decode(data: bytes, img_size: int | None, where: str) -> np.ndarray:
    """One image as ``(H, W)`` (grey) or ``(H, W, 3)`` uint8; any failure names ``where``."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if img_size is not None and im.format == "JPEG":
                im.draft(None, (img_size, img_size))
            im = _to_8bit(im)
            if img_size is not None and im.size != (img_size, img_size):
                w, h = im.size
                scale = img_size / min(w, h)
                im = im.resize((max(img_size, round(w * scale)), max(img_size, round(h * scale))),
                               Image.Resampling.BICUBIC)
                left, top = (im.size[0] - img_size) // 2, (im.size[1] - img_size) // 2
                im = im.crop((left, top, left + img_size, top + img_size))
            return np.asarray(im)
    except Exception as e:  # noqa: BLE001 -- Pillow raises many types; all get the file name
        raise DatasetError(
            f"cannot decode image {where}: {type(e).__name__}: {e}; remove or replace the file"
        ) from None


def _decode_chunk(jobs: list[tuple[bytes, int | None, str]]) -> list[np.ndarray]:
    return [_decode(*job) for job in jobs]


def _decode_all(jobs: list[tuple[bytes, int | None, str]], workers: int | None
                ) -> list[np.ndarray]:
    """Decode in this process, or in ``workers`` forked processes for large folders."""
    if workers is None:  # measured: 2 processes on 2 busy cores are slower than one
        workers = min(8, (os.cpu_count() or 1) // 2)
    if workers <= 1 or len(jobs) < POOL_MIN_IMAGES or "fork" not in mp.get_all_start_methods():
        return _decode_chunk(jobs)
    size = max(256, len(jobs) // (workers * 8))
    chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
        return [a for part in pool.map(_decode_chunk, chunks) for a in part]


def _warn_empty(path: Path, empty: list[str]) -> None:
    if empty:
        warnings.warn(
            f"image folder {path}: {len(empty)} class folder(s) hold no images and are "
            f"ignored: {', '.join(empty)}", stacklevel=3,
        )


def decode_image_folder(
    path: str | Path, img_size: int | None = None, workers: int | None = None
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str], str]:
    """Decode every image of a folder or tar.

    Args:
        path: a directory or tar archive laid out as ``SPLIT/CLASS/IMAGE``.
        img_size: resize (shorter side, bicubic) and centre-crop every image to
            ``img_size`` x ``img_size``; None keeps the size, which must then be the same
            for all images.
        workers: decoding processes (None: half the CPUs, up to 8, so none on 2 cores;
            1: this process only).

    Returns:
        ``({split: (images (N, C, H, W) uint8, labels (N,) int64)}, classes, mode)`` where
        mode is ``"L"`` (C = 1) when every image is grey, else ``"RGB"`` (C = 3).

    Raises:
        DatasetError: no images, a wrong layout, fewer than two classes, an image that
            cannot be decoded (the message names it), or mixed sizes without ``img_size``.

    Warns about ``SPLIT/CLASS`` folders that hold no image, naming them.
    """
    path = Path(path)
    splits, classes, mode, _ = _decode_folder(path, img_size, workers)
    return splits, classes, mode


def _decode_folder(path: Path, img_size: int | None, workers: int | None
                   ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str], str, list[str]]:
    """:func:`decode_image_folder` plus the list of empty ``SPLIT/CLASS`` folders."""
    folders: list[tuple[str, ...]] = []
    entries, empty = _layout(list(_iter_entries(path, folders)), folders, path)
    _warn_empty(path, empty)
    classes = sorted({e[1] for e in entries})
    if len(classes) < 2:
        raise DatasetError(
            f"image folder {path} has {len(classes)} class ({', '.join(classes)}); a "
            f"classifier needs at least two class folders per split (SPLIT/CLASS/IMAGE)"
        )
    class_index = {c: i for i, c in enumerate(classes)}
    jobs = [(data, img_size, where) for _, _, _, data, where in entries]
    arrays = _decode_all(jobs, workers)
    mode = "L" if all(a.ndim == 2 for a in arrays) else "RGB"
    if mode == "RGB":  # grey images among colour ones: R = G = B, as Pillow's L -> RGB
        arrays = [np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    size = arrays[0].shape[:2]
    for (_, _, where), arr in zip(jobs, arrays, strict=True):
        if arr.shape[:2] != size:
            raise DatasetError(
                f"images in {path} have different sizes ({size[1]}x{size[0]} and "
                f"{arr.shape[1]}x{arr.shape[0]} at {where}); pass an image size "
                f"(--img-size N) to resize them all"
            )
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in sorted({e[0] for e in entries}):
        pick = [i for i, e in enumerate(entries) if e[0] == split]
        images = np.stack([arrays[i] for i in pick])
        labels = np.array([class_index[entries[i][1]] for i in pick], dtype=np.int64)
        chw = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
        splits[split] = (np.ascontiguousarray(chw), labels)
    return splits, classes, mode, empty


def cache_path(path: str | Path, img_size: int | None, cache_dir: str | Path | None,
               fp: dict[str, int | str] | None = None) -> Path:
    """The cache directory of a decoded image folder or tar (``fp``: its
    :func:`fingerprint`, computed if not given)."""
    path = Path(path).resolve()
    fp = fingerprint(path) if fp is None else fp
    key_src = json.dumps(
        {"path": str(path), "fp": fp, "img_size": img_size, "v": CACHE_VERSION},
        sort_keys=True,
    )
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    return resolve_cache_dir(cache_dir) / "folders" / f"{source_stem(path)}-{key}"


def _read_cache(cdir: Path, fp: dict[str, int | str], img_size: int | None) -> dict | None:
    meta_file = cdir / "meta.json"
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return None
    if (meta.get("version") != CACHE_VERSION or meta.get("fingerprint") != fp
            or meta.get("img_size") != img_size):
        return None
    return meta


def load_image_folder(
    path: str | Path,
    split: str,
    img_size: int | None = None,
    cache_dir: str | Path | None = None,
    cache: bool = True,
    name: str | None = None,
    workers: int | None = None,
) -> ImageDataset:
    """Load one split of an image folder or tar, from the cache when it is current.

    Args:
        path: directory or tar (``.tar``, ``.tar.gz``, ``.tgz``) laid out as SPLIT/CLASS/IMAGE.
        split: the split folder's name.
        img_size: see :func:`decode_image_folder`.
        cache_dir: the cache root (see :mod:`beyond_attention.data.cache`).
        cache: False decodes afresh and neither reads nor writes the cache
            (``--no-cache``).
        name: the dataset's name for the record (default: the file's stem).
        workers: decoding processes (see :func:`decode_image_folder`).

    Returns:
        an :class:`ImageDataset`; ``extra["cache"]`` says ``"hit"``, ``"written"`` or
        ``"off"``, ``extra["seconds"]`` how long loading took.
    """
    t0 = time.perf_counter()
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"image folder {path} does not exist")
    name = name or source_stem(path)
    # One fingerprint, taken before decoding: a folder changed while it is decoded gets a
    # cache that no longer matches it, so the next load decodes it again.
    fp = fingerprint(path) if cache else None
    cdir = cache_path(path, img_size, cache_dir, fp) if fp is not None else None
    meta = _read_cache(cdir, fp, img_size) if cdir is not None and fp is not None else None
    if meta is not None:
        if split not in meta["splits"]:
            raise DatasetError(
                f"split {split!r} not found in {path} (splits: {sorted(meta['splits'])})"
            )
        try:
            images = np.load(cdir / f"{split}.images.npy", allow_pickle=False)
            labels = np.load(cdir / f"{split}.labels.npy", allow_pickle=False)
        except (OSError, ValueError):
            meta = None  # damaged cache: decode again below
        else:
            _warn_empty(path, list(meta.get("empty_folders", [])))
            return ImageDataset(
                images, labels, meta["classes"], name=name, split=split, source=str(path),
                extra={"cache": "hit", "seconds": time.perf_counter() - t0},
            )
    splits, classes, mode, empty = _decode_folder(path, img_size, workers)
    state = "off"
    if cdir is not None:
        try:
            for s, (imgs, labs) in splits.items():
                atomic_save_npy(cdir / f"{s}.images.npy", imgs)
                atomic_save_npy(cdir / f"{s}.labels.npy", labs)
            atomic_write_json(cdir / "meta.json", {
                "version": CACHE_VERSION, "source": str(path.resolve()),
                "fingerprint": fp, "img_size": img_size, "mode": mode,
                "classes": classes, "splits": {s: len(v[1]) for s, v in splits.items()},
                "empty_folders": empty,
                "decode_seconds": round(time.perf_counter() - t0, 3),
            })
            state = "written"
        except OSError as e:
            warnings.warn(f"could not write the decode cache {cdir}: {e}", stacklevel=2)
    if split not in splits:
        raise DatasetError(f"split {split!r} not found in {path} (splits: {sorted(splits)})")
    images, labels = splits[split]
    return ImageDataset(
        images, labels, classes, name=name, split=split, source=str(path),
        extra={"cache": state, "seconds": time.perf_counter() - t0},
    )


def folder_splits(path: str | Path, cache_dir: str | Path | None = None,
                  img_size: int | None = None) -> list[str] | None:
    """The split names of an image folder: from its cache if current, else from a directory
    listing; None for a tar that is not cached yet (listing it means reading it)."""
    path = Path(path)
    fp = fingerprint(path)
    meta = _read_cache(cache_path(path, img_size, cache_dir, fp), fp, img_size)
    if meta is not None:
        return sorted(meta["splits"])
    if path.is_dir():
        return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    return None
