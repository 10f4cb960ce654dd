"""The per-user cache directory and atomic file writes.

The cache holds decoded image folders (``folders/``) and downloads (``datasets/``). Its
location is, in order: the ``cache_dir`` argument (``--cache-dir``), the environment
variable ``BEYOND_ATTENTION_CACHE``, ``$XDG_CACHE_HOME/beyond-attention``, and
``~/.cache/beyond-attention``.

Every file is written atomically: to a temporary file in the same directory, flushed and
fsynced, then moved over the target with :func:`os.replace`, so a reader sees the old file
or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

CACHE_ENV = "BEYOND_ATTENTION_CACHE"


def default_cache_dir() -> Path:
    """The per-user cache directory (not created)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "beyond-attention"


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    """``cache_dir`` if given, else :func:`default_cache_dir`."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then move it onto ``path``.

    The temporary file is removed if ``write`` fails; ``path`` is never left half written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Save ``array`` in ``.npy`` format (no pickled objects) to ``path`` atomically."""
    atomic_write(path, lambda f: np.save(f, np.ascontiguousarray(array), allow_pickle=False))

