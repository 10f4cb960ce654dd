"""``beyond-attention demo``: build every token mixer and print what it costs.

For each mixer of :func:`~beyond_attention.layers.create_mixer` at one width, and each grid
of tokens, it runs one forward pass and reports the output shape, the parameters and the
forward multiply-accumulates (from :func:`beyond_attention.flops.count`; softmax,
normalisations and elementwise ops are not counted) and one warm forward's wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import torch

from ..flops import count
from ..layers.carried import CarriesAttention, run_carried
from ..layers.factory import MIXER_NAMES, create_mixer
from ..tables import format_table as _format_table


def _grid(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        h, w = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, 0)
    except ValueError:
        h = w = 0
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"--grid takes H or HxW with positive sizes, got {text!r}")
    return h, w


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dim", type=int, default=256, help="token width C (default 256)")
    parser.add_argument(
        "--grid", type=_grid, nargs="+", default=[(14, 14), (28, 28)],
        help="token grids to try, as H or HxW (default 14 28)",
    )
    parser.add_argument(
        "--mixers", nargs="+", default=list(MIXER_NAMES), choices=MIXER_NAMES, metavar="NAME",
        help=f"mixers to build (default all: {', '.join(MIXER_NAMES)})",
    )
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def measure_mixer(name: str, dim: int, grid: tuple[int, int], batch: int) -> dict[str, Any]:
    """Build mixer ``name`` for a ``grid`` of tokens and measure one forward pass."""
    h, w = grid
    n = h * w
    torch.manual_seed(0)
    x = torch.randn(batch, n, dim)
    inputs: tuple[Any, ...] = (x,)
    mixer = create_mixer(name, dim, num_tokens=n, grid_size=grid, layer_index=1).eval()
    if isinstance(mixer, CarriesAttention):
        # A carrying layer may transform the scores of the layer before it: make them as a
        # model does, by running the stack's first layer (not measured) before it.
        first = create_mixer(name, dim, num_tokens=n, grid_size=grid, layer_index=0).eval()
        with torch.no_grad():
            inputs = (x, run_carried([first], x)[1])
    with torch.no_grad():
        mixer(*inputs)  # warm-up: first calls pay for allocation and kernel selection
        start = time.perf_counter()
        out = mixer(*inputs)
        seconds = time.perf_counter() - start
    out = out[0] if isinstance(out, tuple) else out
    flops = count(mixer, inputs=inputs)
    return {
        "mixer": name,
        "grid": f"{h}x{w}",
        "tokens": n,
        "input": list(x.shape),
        "output": list(out.shape),
        "params": sum(p.numel() for p in mixer.parameters()),
        "gmacs": flops.gmacs,
        "forward_ms": seconds * 1e3,
        "finite": bool(torch.isfinite(out).all()),
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of the rows made by :func:`measure_mixer`."""
    headers = ["mixer", "grid", "input", "output", "params", "GMACs", "fwd ms"]
    body = [
        [
            r["mixer"], r["grid"], str(tuple(r["input"])), str(tuple(r["output"])),
            f"{r['params']:,}", f"{r['gmacs']:.4f}", f"{r['forward_ms']:.1f}",
        ]
        for r in rows
    ]
    return _format_table(headers, body)


def _check_args(args: argparse.Namespace) -> None:
    """Reject sizes no mixer can be built or run with, naming the flag."""
    for flag, value in (("--dim", args.dim), ("--batch", args.batch)):
        if value <= 0:
            raise ValueError(f"{flag} must be a positive int, got {value}")


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    rows = []
    for grid in args.grid:
        for name in args.mixers:
            rows.append(measure_mixer(name, args.dim, grid, args.batch))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"Token mixers at width C={args.dim}, batch {args.batch}; GMACs count matrix "
              "products and convolutions (softmax, norms and elementwise ops are not counted).")
        print(format_table(rows))
    bad = [r for r in rows if not r["finite"] or r["output"] != r["input"]]
    for r in bad:
        print(f"error: mixer {r['mixer']} at {r['grid']} gave output {r['output']}, "
              f"finite={r['finite']}")
    return 1 if bad or any(math.isnan(r["gmacs"]) for r in rows) else 0
