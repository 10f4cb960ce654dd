"""``beyond-attention study``: every token mixer in one backbone at an equal wall-clock
budget, N seeds each, beside the paper models' small variants (see
:mod:`beyond_attention.bench.study`). Resumable: a rerun skips the runs already done.
Several copies of the same command share the work (each run is claimed by one of them):
on K cores, K copies with ``--threads 1`` (``benchmarks/run_study.sh``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..bench.study import entries, entry_costs, plot, run_study, summarise
from ..io import atomic_write_bytes, atomic_write_json
from ..models._registry import AMP_MODES
from ..train.config import count_or_all


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/study", metavar="DIR",
                   help="study directory: results/, runs/, study.md, study.json "
                        "(default: runs/study)")
    p.add_argument("--budget-minutes", type=float, default=15.0, metavar="M",
                   help="training minutes per run (default: 15)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per entry (default: 3)")
    p.add_argument("--only", default=None, metavar="NAMES",
                   help="comma-separated entries to run (default: all: "
                        + ", ".join(e.name for e in entries()) + ")")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="dataset path (default: as for train)")
    p.add_argument("--limit-train", type=count_or_all, default=None, metavar="N",
                   help="train on N images (default: 0, all)")
    p.add_argument("--limit-val", type=count_or_all, default=None, metavar="N",
                   help="evaluate on N images (default: 0, all)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="batch size (default: each model's recipe)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per run")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--amp", default="off", choices=AMP_MODES,
                   help="mixed precision of every run, as train's --amp (default: off, "
                        "float32 for every entry, as the recorded study; 'native' or 'auto' "
                        "for bfloat16)")


def run(args: argparse.Namespace) -> int:
    """Run the ``study`` command."""
    out = Path(args.out)
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    kwargs = {"data": args.data, "limit_train": args.limit_train,
              "limit_val": args.limit_val, "threads": args.threads, "device": args.device,
              "batch_size": args.batch_size, "amp": args.amp}
    results = run_study(out, args.budget_minutes, args.seeds, kwargs, only,
                        log=lambda line: print(line, flush=True))
    missing = len(entries(only)) * args.seeds - len(results)
    if missing:
        print(f"{missing} run(s) still training in other processes: the summary covers the "
              "finished ones; run the same command again when they are done", flush=True)
    done = {r["entry"] for r in results}
    costs = {e.name: entry_costs(e) for e in entries(only) if e.name in done}
    rows, table = summarise(results, costs)
    atomic_write_json(out / "study.json", {"budget_minutes": args.budget_minutes,
                                           "seeds": args.seeds, "rows": rows,
                                           "runs": results})
    atomic_write_bytes(out / "study.md", (f"# Mixer study, {args.budget_minutes:g} minutes "
                                          f"a run, {args.seeds} seed"
                                          f"{'s' if args.seeds > 1 else ''}\n\n{table}\n"
                                          ).encode())
    plot(rows, out / "study.png")
    print(table)
    return 0
