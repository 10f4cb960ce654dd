"""Measure which models export and what compiling buys: ``python -m
beyond_attention.export.report [MODEL ...] [--out benchmarks/export.md] [--compile]``.

Export table (default: every registered model, random weights, its config's input): the
ONNX export (opset, file size, export time, parity against PyTorch on 3 seeded random
inputs), the median latency of onnxruntime and of eager PyTorch (interleaved repeats, one
thread; batch 8, or 1 for inputs above 128x128 pixels), and ``torch.export`` agreement
at another batch size.

``--compile`` table (default: the ``*_cifar*`` models, batch 32): graph breaks counted by
``torch._dynamo.explain`` in eval and train mode; eager vs ``torch.compile`` (inductor)
inference and training-step time (forward, cross-entropy, backward, SGD step), eager and
compiled repeats interleaved; compile times; the largest output and gradient differences
of the first compiled call against eager (train mode: same weights and seed, inductor's
``fallback_random`` so dropout draws the same masks).

Each model runs in a child process with a time limit (``--timeout``); a model over it gets
a row saying so. With ``--out`` the file is rewritten atomically after every row and a
rerun keeps the rows already measured there (``--redo`` measures them again; rows that
ran over the limit or failed are tried again): the table sits between two marker
comments, so the text around it is kept.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write_bytes
from ..tables import fmt_bytes, format_table

EXPORT_HEADERS = ["model", "input", "exports", "opset", "file", "export s",
                  "parity max abs diff", "onnxruntime ms", "PyTorch ms", "batch",
                  "torch.export max diff", "note"]
COMPILE_HEADERS = ["model", "graph breaks (eval / train)", "inference eager ms",
                   "inference compiled ms", "speed-up", "train step eager ms",
                   "train step compiled ms", "speed-up", "compile s (inference / train)",
                   "max diff (inference / train out / grad)", "note"]


def _markers(kind: str) -> tuple[str, str]:
    return (f"<!-- begin {kind} table (python -m beyond_attention.export.report) -->",
            f"<!-- end {kind} table -->")


def _interleaved_ms(fns: Sequence[Callable[[], Any]], repeats: int) -> list[float]:
    """Median milliseconds of each function, one call of each per round (after a warm-up
    call each), so a change in the machine's load hits all of them alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [1000 * statistics.median(ts) for ts in times]


def _model_inputs(name: str, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    from beyond_attention.models._registry import example_input, get_model_config

    config = get_model_config(name)
    x = example_input(config, batch, generator=gen)
    if config.task == "pointcloud_part_segmentation":
        cats = int(config.extra.get("num_categories", 16))
        return x, torch.randint(0, cats, (batch,), generator=gen)
    return (x,)


def _describe_input(name: str) -> str:
    from beyond_attention.models._registry import get_model_config

    config = get_model_config(name)
    shape = "x".join(str(s) for s in config.input_size)
    if config.task == "pointcloud_part_segmentation":
        return f"{shape} points + category"
    return f"{shape} points" if config.task.startswith("pointcloud") else shape


def _latency_batch(name: str) -> int:
    from beyond_attention.models._registry import get_model_config

    size = get_model_config(name).input_size
    return 1 if len(size) == 3 and size[1] * size[2] > 128 * 128 else 8


def measure_export(name: str, repeats: int = 5) -> list[str]:
    """One export-table row for ``name``."""
    import beyond_attention.models  # noqa: F401
    from beyond_attention.models._registry import create_model

    from .onnx import (
        DEFAULT_OPSET,
        ExportError,
        check_parity,
        onnx_feed,
        onnx_program,
        onnx_session,
    )

    torch.manual_seed(0)
    model = create_model(name).eval()
    gen = torch.Generator().manual_seed(0)
    row = [name, _describe_input(name)]
    try:  # one export: its ONNX model for parity and latency, its torch.export program
        t0 = time.perf_counter()
        program = onnx_program(model, _model_inputs(name, 2, gen))
        seconds = time.perf_counter() - t0
    except ExportError as e:
        return [*row, "no", str(DEFAULT_OPSET), "", "", "", "", "", "", "", str(e)[:80]]
    data = program.model_proto.SerializeToString()
    parity = check_parity(model, data, _model_inputs(name, 3, gen))
    batch = _latency_batch(name)
    session = onnx_session(data, threads=1)
    x = _model_inputs(name, batch, gen)
    feed = onnx_feed(session, x)
    with torch.no_grad():
        t_ort, t_torch = _interleaved_ms([lambda: session.run(None, feed), lambda: model(*x)],
                                         repeats)
        other = _model_inputs(name, 5, gen)
        exported = _max_diff(program.exported_program.module()(*other), model(*other))
    rel = parity.max_abs_diff / max(parity.max_abs_ref, 1e-12)
    return [*row, "yes" if parity.ok else "parity fails", str(DEFAULT_OPSET),
            fmt_bytes(len(data)), f"{seconds:.0f}", f"{parity.max_abs_diff:.2g} (rel {rel:.1g})",
            f"{t_ort:.1f}", f"{t_torch:.1f}", str(batch), f"{exported:.2g}", ""]


def _train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                y: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    opt.zero_grad(set_to_none=True)
    out = model(x)
    F.cross_entropy(out, y).backward()
    opt.step()
    return out


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).abs().max())


def measure_compile(name: str, batch: int = 32, repeats: int = 5) -> list[str]:
    """One ``--compile`` row for ``name``: graph breaks, eager vs inductor time, agreement."""
    import beyond_attention.models  # noqa: F401
    from beyond_attention.models._registry import create_model, example_input

    torch.manual_seed(0)
    model = create_model(name)
    gen = torch.Generator().manual_seed(0)
    x = example_input(name, batch, generator=gen)
    y = torch.randint(0, model.num_classes, (batch,), generator=gen)

    breaks, reasons = [], []
    for train in (False, True):
        torch._dynamo.reset()
        probe = copy.deepcopy(model).train(train)
        with torch.set_grad_enabled(train):
            explained = torch._dynamo.explain(probe)(x)
        breaks.append(explained.graph_break_count)
        reasons += [str(r.reason).splitlines()[0][:60] for r in explained.break_reasons]
    torch._dynamo.reset()

    model.eval()
    compiled = torch.compile(model)
    with torch.no_grad():
        ref = model(x)
        t0 = time.perf_counter()
        got = compiled(x)
        compile_inf = time.perf_counter() - t0
        inf_eager, inf_compiled = _interleaved_ms([lambda: model(x), lambda: compiled(x)],
                                                  repeats)
    diff_inf = _max_diff(got, ref)

    eager_m, other = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    opt_e = torch.optim.SGD(eager_m.parameters(), lr=1e-3, momentum=0.9)
    opt_c = torch.optim.SGD(other.parameters(), lr=1e-3, momentum=0.9)
    with torch._inductor.config.patch(fallback_random=True):
        compiled_train = torch.compile(other)
        torch.manual_seed(0)
        ref = _train_step(eager_m, opt_e, x, y)
        torch.manual_seed(0)
        t0 = time.perf_counter()
        got = _train_step(compiled_train, opt_c, x, y)
        compile_train = time.perf_counter() - t0
    diff_out = _max_diff(got, ref)
    diff_grad = max(_max_diff(p.grad, q.grad) for p, q in
                    zip(eager_m.parameters(), other.parameters(), strict=True)
                    if p.grad is not None and q.grad is not None)
    tr_eager, tr_compiled = _interleaved_ms(
        [lambda: _train_step(eager_m, opt_e, x, y),
         lambda: _train_step(compiled_train, opt_c, x, y)], repeats)
    note = "; ".join(sorted(set(reasons)))[:120]
    return [name, f"{breaks[0]} / {breaks[1]}", f"{inf_eager:.1f}", f"{inf_compiled:.1f}",
            f"{inf_eager / inf_compiled:.2f}x", f"{tr_eager:.1f}", f"{tr_compiled:.1f}",
            f"{tr_eager / tr_compiled:.2f}x", f"{compile_inf:.0f} / {compile_train:.0f}",
            f"{diff_inf:.1g} / {diff_out:.1g} / {diff_grad:.1g}", note]


def _read_rows(text: str, kind: str, width: int) -> dict[str, list[str]]:
    """The rows already in ``text``'s table of ``kind``, by model name."""
    begin, end = _markers(kind)
    if begin not in text or end not in text:
        return {}
    body = text.split(begin, 1)[1].split(end, 1)[0]
    rows = {}
    for line in body.strip().splitlines()[2:]:  # after the header and the rule
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == width:
            rows[cells[0]] = cells
    return rows


def _splice(text: str, kind: str, table: str) -> str:
    """``text`` with its table of ``kind`` replaced by ``table`` (appended if absent)."""
    begin, end = _markers(kind)
    block = f"{begin}\n{table}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        return head + block + rest.split(end, 1)[1]
    return text.rstrip("\n") + ("\n\n" if text.strip() else "") + block + "\n"


def _child_row(name: str, compile_mode: bool, timeout: float, headers: list[str]
               ) -> list[str]:
    """Measure ``name`` in a child process; a row saying why when it fails or runs over."""
    cmd = [sys.executable, "-m", "beyond_attention.export.report", "--one", name]
    if compile_mode:
        cmd.append("--compile")
    blank = [""] * (len(headers) - 2)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [name, *blank, f"not run: over the {timeout:g} s limit"]
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("[")]
    if done.returncode != 0 or not lines:
        err = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return [name, *blank, f"failed: {err[:100]}"]
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    from beyond_attention import list_models

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*")
    p.add_argument("--out", default=None, help="markdown file whose table is (re)written")
    p.add_argument("--compile", action="store_true",
                   help="the torch.compile table instead of the export table")
    p.add_argument("--redo", action="store_true", help="measure rows already in --out again")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds allowed per model (default 600)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the child's model
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.one:
        row = (measure_compile if args.compile else measure_export)(args.one)
        print(json.dumps(row), flush=True)
        return 0
    kind, headers = ("compile", COMPILE_HEADERS) if args.compile else ("export",
                                                                       EXPORT_HEADERS)
    names = args.models or list_models("*_cifar*" if args.compile else "*")
    out = Path(args.out) if args.out else None
    text = out.read_text() if out is not None and out.exists() else ""
    rows = _read_rows(text, kind, len(headers))
    for name in names:
        measured = name in rows and not rows[name][-1].startswith(("not run", "failed"))
        if measured and not args.redo:
            continue
        rows[name] = _child_row(name, args.compile, args.timeout, headers)
        print(" | ".join(rows[name]), flush=True)
        if out is not None:  # rows another run wrote meanwhile are kept
            text = out.read_text() if out.exists() else ""
            rows = {**_read_rows(text, kind, len(headers)), name: rows[name]}
            order = [n for n in list_models() if n in rows] + [n for n in rows
                                                               if n not in list_models()]
            table = format_table(headers, [rows[n] for n in order], markdown=True)
            text = _splice(text, kind, table)
            atomic_write_bytes(out, text.encode())
    if out is None:
        print(format_table(headers, [rows[n] for n in names], markdown=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
