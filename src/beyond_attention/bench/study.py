"""The mixer study: every token mixer in one shared backbone, trained at an equal
wall-clock budget, beside the paper models' small variants.

The backbone is ``vit_tiny_cifar`` (the same patch stem, depth, width and head for every
entry); only its ``mixer`` differs: self-attention on SDPA (``self``), external attention
(Guo et al., arXiv:2105.02358, ``external`` and multi-head ``external_mh``), the lambda
layer (Bello, arXiv:2102.08602, ``lambda``), LaViT's less-attention (arXiv:2406.00427,
``less``), the MLP-Mixer token MLP (``mlp_mixer``) and no token mixing
(``feedforward``). The paper models' CIFAR variants follow. Each (entry, seed) is one
``train --budget-minutes M`` run; its result is saved atomically as
``results/ENTRY-sSEED.json`` under the study's directory, so a rerun skips what is done.
:func:`summarise` gives mean +- std of top-1 per entry beside parameters, GMACs and
training images/s (GMACs where the caller passes them; ``beyond-attention models`` lists
each model's).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import atomic_write_json
from ..tables import format_table

__all__ = ["BACKBONE", "MIXERS", "PAPER_MODELS", "StudyEntry", "entries", "plot", "run_study",
           "summarise"]

BACKBONE = "vit_tiny_cifar"
MIXERS: tuple[str, ...] = ("self", "external", "external_mh", "lambda", "less", "mlp_mixer",
                           "feedforward")
PAPER_MODELS: tuple[str, ...] = ("lavit_tiny_cifar", "eamlp_cifar", "lambda_resnet26_cifar",
                                 "resnet26_cifar")


@dataclass(frozen=True)
class StudyEntry:
    """One row of the study: a name, the registered model and its extra arguments."""

    name: str
    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)


def entries(only: Sequence[str] | None = None) -> list[StudyEntry]:
    """The study's rows (``mixer-NAME`` for the backbone, the model name for the paper
    models), restricted to ``only`` when given."""
    rows = [StudyEntry(f"mixer-{m}", BACKBONE, {"mixer": m}) for m in MIXERS]
    rows += [StudyEntry(m, m) for m in PAPER_MODELS]
    if only:
        known = {e.name for e in rows}
        unknown = [n for n in only if n not in known]
        if unknown:
            raise ValueError(f"unknown study entries {unknown}; expected some of "
                             f"{', '.join(sorted(known))}")
        rows = [e for e in rows if e.name in set(only)]
    return rows


def run_study(out: Path, budget_minutes: float, seeds: int,
              train_kwargs: dict[str, Any] | None = None, only: Sequence[str] | None = None,
              log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train every (entry, seed) not yet done; return all the results.

    ``train_kwargs`` are further :class:`~beyond_attention.train.config.TrainConfig`
    settings (data, limits, threads, ...). Each finished run's result is written
    atomically to ``out/results/ENTRY-sSEED.json`` before the next run starts.
    """
    from ..train import TrainConfig, train

    if seeds <= 0:
        raise ValueError(f"seeds must be positive, got {seeds}")
    if not budget_minutes > 0:
        raise ValueError(f"budget_minutes must be positive, got {budget_minutes}")
    rows = entries(only)
    results: list[dict[str, Any]] = []
    total, k = len(rows) * seeds, 0
    for entry in rows:
        for seed in range(seeds):
            k += 1
            path = out / "results" / f"{entry.name}-s{seed}.json"
            if path.is_file():
                result = json.loads(path.read_text())
                log(f"[{k}/{total}] {entry.name} seed {seed}: done before, top-1 "
                    f"{result['top1']:.2f}")
                results.append(result)
                continue
            cfg = TrainConfig(**{"quiet": True, **(train_kwargs or {}), "model": entry.model,
                                 "model_kwargs": dict(entry.model_kwargs), "seed": seed,
                                 "budget_minutes": budget_minutes,
                                 "out": str(out / "runs" / f"{entry.name}-s{seed}"),
                                 "resume": "auto"})
            final = train(cfg)
            result = {"entry": entry.name, "model": entry.model, "seed": seed,
                      "model_kwargs": dict(entry.model_kwargs), "top1": final["top1"],
                      "params": final["params"], "images_per_s": final["images_per_s"],
                      "images_seen": final["images_seen"], "epochs_done": final["epochs_done"],
                      "val_images": final["val_images"], "budget_minutes": budget_minutes}
            atomic_write_json(path, result)
            log(f"[{k}/{total}] {entry.name} seed {seed}: top-1 {final['top1']:.2f}, "
                f"{final['images_per_s']:.0f} img/s, {final['epochs_done']:.2f} epochs")
            results.append(result)
    return results


def summarise(results: Sequence[dict[str, Any]],
              gmacs: dict[str, float | None] | None = None) -> tuple[list[dict], str]:
    """Per entry: mean and std of top-1 over seeds, params, GMACs, images/s. Returns the
    rows and a markdown table."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by.setdefault(r["entry"], []).append(r)
    rows = []
    for name, rs in by.items():
        tops = [r["top1"] for r in rs]
        rows.append({"entry": name, "seeds": len(rs), "top1_mean": statistics.fmean(tops),
                     "top1_std": statistics.stdev(tops) if len(tops) > 1 else 0.0,
                     "params": rs[0]["params"], "gmacs": (gmacs or {}).get(name),
                     "images_per_s": statistics.fmean(r["images_per_s"] for r in rs)})
    table = format_table(
        ["entry", "seeds", "top-1 %", "params (M)", "GMACs", "train img/s"],
        [[r["entry"], str(r["seeds"]), f"{r['top1_mean']:.2f} +- {r['top1_std']:.2f}",
          f"{r['params'] / 1e6:.3f}", "-" if r["gmacs"] is None else f"{r['gmacs']:.3f}",
          f"{r['images_per_s']:.0f}"] for r in rows], markdown=True)
    return rows, table


def plot(rows: Sequence[dict[str, Any]], path: Path) -> bool:
    """Top-1 (mean, with the std as error bar) against training images/s, written to
    ``path`` (PNG); False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        ax.errorbar(r["images_per_s"], r["top1_mean"], yerr=r["top1_std"], fmt="o")
        ax.annotate(r["entry"], (r["images_per_s"], r["top1_mean"]), fontsize=7)
    ax.set_xlabel("training images/s")
    ax.set_ylabel("top-1 (%)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return True
