"""The mixer study: every token mixer in one shared backbone, trained at an equal
wall-clock budget, beside the paper models' small variants.

The backbone is ``vit_tiny_cifar`` (the same patch stem, depth, width and head for every
entry); only its ``mixer`` differs: self-attention on SDPA (``self``), external attention
(Guo et al., arXiv:2105.02358, ``external`` and multi-head ``external_mh``), the lambda
layer (Bello, arXiv:2102.08602, ``lambda``), LaViT's less-attention (arXiv:2406.00427,
``less``), the MLP-Mixer token MLP (``mlp_mixer``) and no token mixing
(``feedforward``); the lambda entry alone pools by the mean over tokens instead of a class
token, since the lambda layer needs an exact token grid. The paper models' CIFAR variants
follow. Each (entry, seed) is one
``train --budget-minutes M`` run; its result is saved atomically as
``results/ENTRY-sSEED.json`` under the study's directory, so a rerun skips what is done.
Several study processes can share one directory (lanes: one thread each on a multi-core
machine): each run is claimed first (``claims/ENTRY-sSEED.pid``, created exclusively),
so every (entry, seed) trains once; a claim whose process has died is taken over and its
run resumed.

:func:`summarise` gives mean +- std of top-1 per entry beside parameters, training
images/s and the costs of :func:`entry_costs`: GMACs of one image's forward and the
activation memory one image's training forward keeps for backward, both at the model's
configured input (3x32x32 for every entry here). :func:`plot` draws top-1 against
training images/s and against GMACs.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import atomic_write_json
from ..tables import format_table

__all__ = ["BACKBONE", "MIXERS", "PAPER_MODELS", "StudyEntry", "claim_run", "entries",
           "entry_costs", "plot", "run_study", "summarise"]

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


def entry_costs(entry: StudyEntry) -> dict[str, float]:
    """What one image costs the entry's model at its configured input size.

    Returns ``gmacs`` (multiply-accumulates of one forward pass, in 1e9, from
    :func:`beyond_attention.flops.count`: matrix products and convolutions; softmax,
    norms and elementwise operations are not counted) and ``activation_mib`` (MiB that
    one image's training forward saves for the backward pass,
    :func:`beyond_attention.bench.memory.activation_bytes`).
    """
    import torch

    from ..flops import count
    from ..models._registry import create_model, example_input
    from .memory import activation_bytes_per_image

    torch.manual_seed(0)
    model = create_model(entry.model, **entry.model_kwargs)
    gmacs = count(model, fake=True).gmacs
    model.train()
    gen = torch.Generator().manual_seed(0)
    activation = activation_bytes_per_image(
        model, example_input(model.config, 1, generator=gen),
        lambda: example_input(model.config, 2, generator=gen))
    return {"gmacs": gmacs, "activation_mib": activation / 2**20}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def claim_run(path: Path) -> bool:
    """Claim one study run for this process: True when it is ours to train.

    The claim is ``path`` holding the claimer's pid, created exclusively. A claim held by
    a live process other than this one is refused; one left by a dead process (a killed
    lane) is taken over.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid == os.getpid() or (pid > 0 and _process_alive(pid)):
                return pid == os.getpid()
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def _train_run(out: Path, entry: StudyEntry, seed: int, budget_minutes: float,
               train_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Train one (entry, seed) for ``budget_minutes``; its result record."""
    from ..train import TrainConfig, train

    cfg = TrainConfig(**{"quiet": True, **train_kwargs, "model": entry.model,
                         "model_kwargs": dict(entry.model_kwargs), "seed": seed,
                         "budget_minutes": budget_minutes,
                         "out": str(out / "runs" / f"{entry.name}-s{seed}"),
                         "resume": "auto"})
    final = train(cfg)
    return {"entry": entry.name, "model": entry.model, "seed": seed,
            "model_kwargs": dict(entry.model_kwargs), "top1": final["top1"],
            "params": final["params"], "images_per_s": final["images_per_s"],
            "images_seen": final["images_seen"], "epochs_done": final["epochs_done"],
            "val_images": final["val_images"], "budget_minutes": budget_minutes}


def run_study(out: Path, budget_minutes: float, seeds: int,
              train_kwargs: dict[str, Any] | None = None, only: Sequence[str] | None = None,
              log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train every (entry, seed) not yet done nor claimed by another live process; return
    the results finished so far (runs still training elsewhere are left out).

    ``train_kwargs`` are further :class:`~beyond_attention.train.config.TrainConfig`
    settings (data, limits, threads, ...). Each finished run's result is written
    atomically to ``out/results/ENTRY-sSEED.json`` before the next run starts.
    """
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
            claim = out / "claims" / f"{entry.name}-s{seed}.pid"
            if not claim_run(claim):
                log(f"[{k}/{total}] {entry.name} seed {seed}: training in another process")
                continue
            try:
                if path.is_file():  # finished by another process since the check above
                    results.append(json.loads(path.read_text()))
                    continue
                result = _train_run(out, entry, seed, budget_minutes, train_kwargs or {})
                atomic_write_json(path, result)  # before the claim goes
            finally:
                claim.unlink(missing_ok=True)
            log(f"[{k}/{total}] {entry.name} seed {seed}: top-1 {result['top1']:.2f}, "
                f"{result['images_per_s']:.0f} img/s, {result['epochs_done']:.2f} epochs")
            results.append(result)
    return results


def summarise(results: Sequence[dict[str, Any]],
              costs: dict[str, dict[str, float]] | None = None) -> tuple[list[dict], str]:
    """Per entry: mean and std of top-1 over seeds (the std None for one seed), params,
    training images/s and epochs, and the entry's ``costs`` (:func:`entry_costs`) where
    given. Returns the rows and a markdown table, best mean top-1 first."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by.setdefault(r["entry"], []).append(r)
    rows = []
    for name, rs in by.items():
        tops = [r["top1"] for r in rs]
        cost = (costs or {}).get(name, {})
        rows.append({"entry": name, "seeds": len(rs), "top1_mean": statistics.fmean(tops),
                     "top1_std": statistics.stdev(tops) if len(tops) > 1 else None,
                     "params": rs[0]["params"], "gmacs": cost.get("gmacs"),
                     "activation_mib": cost.get("activation_mib"),
                     "images_per_s": statistics.fmean(r["images_per_s"] for r in rs),
                     "epochs_done": statistics.fmean(r.get("epochs_done", 0.0) for r in rs)})
    rows.sort(key=lambda r: -r["top1_mean"])

    def maybe(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    def top1(r: dict[str, Any]) -> str:
        std = r["top1_std"]
        return f"{r['top1_mean']:.2f}" + ("" if std is None else f" +- {std:.2f}")

    table = format_table(
        ["entry", "seeds", "top-1 %", "params (M)", "GMACs", "activations MiB/img",
         "train img/s", "epochs"],
        [[r["entry"], str(r["seeds"]), top1(r),
          f"{r['params'] / 1e6:.3f}", maybe(r["gmacs"], ".3f"),
          maybe(r["activation_mib"], ".2f"), f"{r['images_per_s']:.0f}",
          f"{r['epochs_done']:.2f}"] for r in rows], markdown=True)
    return rows, table


def plot(rows: Sequence[dict[str, Any]], path: Path) -> bool:
    """Top-1 (mean, with the std as error bar where there is one) against training
    images/s and, where the rows have them, against GMACs, side by side, written to
    ``path`` (PNG); False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    axes_keys = [("images_per_s", "training images/s")]
    if any(r.get("gmacs") is not None for r in rows):
        axes_keys.append(("gmacs", "GMACs per image (forward)"))
    fig, axes = plt.subplots(1, len(axes_keys), figsize=(6 * len(axes_keys), 4.5),
                             squeeze=False)
    for ax, (key, label) in zip(axes[0], axes_keys, strict=True):
        for r in rows:
            if r.get(key) is None:
                continue
            ax.errorbar(r[key], r["top1_mean"], yerr=r["top1_std"], fmt="o", capsize=3)
            ax.annotate(r["entry"], (r[key], r["top1_mean"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
    if len(axes_keys) > 1:  # the GMACs span an order of magnitude: a log axis, plain labels
        from matplotlib.ticker import FuncFormatter

        ax = axes[0][1]
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(
            lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "235" else ""))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return True
