"""``beyond-attention models``: every registered model with its size beside the paper's.

For each model matching the pattern: parameters (millions), GMACs (multiply-accumulates, 1e9)
of one image at the model's default input size, and what the paper reports (parameters,
GMACs, ImageNet top-1). FLOPs come from :func:`beyond_attention.flops.count`: matrix
products, convolutions and attention are counted; softmax, normalisation and elementwise
ops are not.

Models are built on the ``meta`` device where they allow it (no memory, no initialisation
cost); otherwise on the CPU, with FLOPs traced through fake tensors.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import torch
from torch import nn

from ..flops import count
from ..models._registry import (
    POINTCLOUD_TASKS,
    create_model,
    example_input,
    get_model_config,
    list_models,
)
from ..tables import format_table as _format_table

NOT_COUNTED = "softmax, normalisation and elementwise ops are not counted"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the ``models`` command."""
    parser.add_argument(
        "pattern", nargs="?", default="*",
        help="shell-style name pattern (default: all); a pattern without wildcards matches "
        "as a substring ('lambda' is '*lambda*')",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--no-flops", action="store_true", help="skip the FLOP count (parameters only, fast)"
    )


def substring_pattern(pattern: str) -> str:
    """A pattern without wildcards (``*``, ``?``, ``[``) matches as a substring:
    ``"lambda"`` becomes ``"*lambda*"``; others are returned as they are."""
    return pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"


def _build(name: str) -> tuple[nn.Module, bool]:
    """Build ``name`` on the meta device if it allows it, else on the CPU."""
    try:
        with torch.device("meta"):
            return create_model(name), True
    except Exception:
        return create_model(name), False


def measure(name: str, flops: bool = True) -> dict[str, Any]:
    """One row of the listing: config fields, our parameters and GMACs, the paper's."""
    config = get_model_config(name)
    row: dict[str, Any] = {
        "name": name,
        "params_m": None,
        "gmacs": None,
        "paper_params_m": config.reported_params_m,
        "paper_gmacs": config.reported_gmacs,
        "paper_top1": config.reported_top1,
        "input_size": list(config.input_size),
        "fixed_input_size": config.fixed_input_size,
        "dataset": config.dataset,
        "paper": config.paper.arxiv if config.paper else None,
        "error": None,
    }
    try:
        model, on_meta = _build(name)
        row["fixed_input_size"] = bool(getattr(model, "fixed_input_size", False))
        row["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
        if flops and config.task in POINTCLOUD_TASKS:  # (1, 3, N) real points, one pass
            model = create_model(name).eval()
            with torch.no_grad():
                row["gmacs"] = count(model, inputs=example_input(config, 1)).gmacs
        elif flops:
            try:
                result = count(model, config.input_size, fake=not on_meta)
            except Exception:
                if not on_meta:
                    raise
                model = create_model(name)
                result = count(model, config.input_size, fake=True)
            row["gmacs"] = result.gmacs
    except Exception as exc:  # report the failure in the row, keep listing the rest
        row["error"] = f"{type(exc).__name__}: {exc}"
    return row


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of the rows made by :func:`measure`."""
    header = [
        "model", "params(M)", "paper", "GMACs", "paper", "top-1", "input", "fixed", "paper id"
    ]
    lines = []
    for r in rows:
        size = "x".join(str(s) for s in r["input_size"])
        lines.append(
            [
                r["name"],
                _fmt(r["params_m"]),
                _fmt(r["paper_params_m"]),
                _fmt(r["gmacs"]),
                _fmt(r["paper_gmacs"]),
                _fmt(r["paper_top1"], 1),
                size,
                _fmt(r["fixed_input_size"]),
                _fmt(r["paper"]),
            ]
        )
    out = [line.rstrip() for line in _format_table(header, lines).split("\n")]
    for r in rows:
        if r["error"]:
            out.append(f"! {r['name']}: {r['error']}")
    out.append(
        "GMACs: multiply-accumulates (1e9) of one image (point models: one cloud of N "
        "points) at the default input size; "
        f"matmuls, convolutions and attention are counted, {NOT_COUNTED}. "
        "'paper' columns: what the paper reports (top-1 on ImageNet-1k)."
    )
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    """List the models matching ``args.pattern``; 1 if none matches or one fails to build."""
    names = list_models(substring_pattern(args.pattern))
    if not names:
        print(f"no registered model matches {args.pattern!r}")
        return 1
    rows = [measure(name, flops=not args.no_flops) for name in names]
    if args.json:
        print(json.dumps({"models": rows, "note": f"GMACs: {NOT_COUNTED}"}, indent=2))
    else:
        print(format_table(rows))
    return 1 if any(r["error"] for r in rows) else 0
