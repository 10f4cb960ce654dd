"""The output directory of a training run: never another run's, unless asked.

A directory holds a run when it contains any of :data:`RUN_FILES`. Starting a new run
there would overwrite its checkpoints (``best.safetensors`` first of all), so that is
refused with :class:`RunDirError` unless ``--resume`` (continue it) or ``--overwrite``
(delete those files and start afresh) is given. Without ``--out`` a run gets a fresh
directory ``runs/MODEL-DATASET``, then ``-2``, ``-3``, ... when that one is taken.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import UsageError

#: The files a training run writes into its directory.
RUN_FILES = ("last.json", "last.safetensors", "last.state.safetensors", "best.safetensors",
             "metrics.jsonl", "final.json")


class RunDirError(UsageError):
    """The output directory already holds a run and neither resume nor overwrite was asked."""


def run_files(out: Path) -> list[str]:
    """The run files present in ``out`` (none if it does not exist)."""
    return [name for name in RUN_FILES if (out / name).is_file()]


def describe_run(out: Path) -> str:
    """What the run in ``out`` is, for a message: its files and, when recorded, its model."""
    model = None
    for name in ("final.json", "last.json"):
        try:
            record = json.loads((out / name).read_text())
        except (OSError, ValueError):
            continue
        model = record.get("model") or record.get("config", {}).get("model")
        if model:
            break
    files = ", ".join(run_files(out))
    return f"a run of {model} ({files})" if model else f"a run ({files})"


def fresh_dir(root: Path, stem: str) -> Path:
    """``root/stem`` if it does not exist (or is an empty directory), else the first such
    ``root/stem-N`` for N = 2, 3, ..."""
    candidate, n = root / stem, 1
    while candidate.exists() and not (candidate.is_dir() and not any(candidate.iterdir())):
        n += 1
        candidate = root / f"{stem}-{n}"
    return candidate


def refuse_existing(out: Path) -> None:
    """Raise :class:`RunDirError` if ``out`` holds a run."""
    if run_files(out):
        raise RunDirError(
            f"output directory {out} already holds {describe_run(out)}; pass --resume to "
            f"continue it, --overwrite to replace it, or another --out"
        )


def clear_run(out: Path) -> list[str]:
    """Delete the run files in ``out`` (``last.json`` first, so a half-cleared directory
    cannot be resumed); return their names. Other files are left alone."""
    removed = []
    for name in RUN_FILES:
        f = out / name
        if f.is_file():
            f.unlink()
            removed.append(name)
    return removed
