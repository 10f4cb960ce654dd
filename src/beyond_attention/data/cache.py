"""The per-user cache directory.

The cache holds decoded image folders (``folders/``) and downloads (``datasets/``). Its
location is, in order: the ``cache_dir`` argument (``--cache-dir``), the environment
variable ``BEYOND_ATTENTION_CACHE``, ``$XDG_CACHE_HOME/beyond-attention``, and
``~/.cache/beyond-attention``.

Every file in it is written atomically (:mod:`beyond_attention.io`).
"""

from __future__ import annotations

import os
from pathlib import Path

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
