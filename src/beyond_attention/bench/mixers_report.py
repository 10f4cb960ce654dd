"""Console table, markdown report and plots of a mixer sweep (:func:`.sweep.run_sweep`).

Every function takes a :class:`~.sweep.SweepResult` (or its JSON dict, read with
:meth:`~.sweep.SweepResult.from_json`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..tables import fmt_bytes, fmt_num, format_table
from .crossover import CROSSES, interpolate_loglog
from .report import fmt_ms, fmt_ratio, load_note, machine_markdown
from .sweep import SweepResult

METRIC_LABELS = {
    "flops": "FLOPs",
    "forward": "forward latency",
    "train": "forward+backward latency",
}


def as_sweep(result: SweepResult | dict[str, Any]) -> SweepResult:
    """``result`` as a :class:`SweepResult` (a JSON dict is read)."""
    return result if isinstance(result, SweepResult) else SweepResult.from_json(result)


def _device(result: SweepResult) -> str:
    return str((result.machine or {}).get("device", "cpu"))


def _rows(result: SweepResult, batch: int, markdown: bool) -> tuple[list[str], list[list[Any]]]:
    cuda = _device(result).startswith("cuda")
    headers = [
        "mixer",
        "tokens",
        "params",
        "GFLOPs",
        "fwd ms [IQR]",
        "fwd+bwd ms [IQR]",
        "activations",
    ]
    if cuda:
        headers.append("peak")
    headers += ["fwd / SDPA", "fwd+bwd / SDPA", "status"]
    order = {n: i for i, n in enumerate(result.mixers)}
    rows = []
    points = sorted(result.points, key=lambda p: (order.get(p.mixer, len(order)), p.tokens))
    for p in points:
        if p.batch != batch:
            continue
        vs = p.vs_self or {}
        row = [
            result.label(p.mixer) if markdown else p.mixer,
            f"{p.grid[0]}x{p.grid[1]}={p.tokens:,}",
            fmt_num(p.params / 1e6, 3) + "M" if p.params is not None else "-",
            fmt_num(p.flops / 1e9) if p.flops is not None else "-",
            fmt_ms(p.forward_ms),
            fmt_ms(p.train_ms),
            fmt_bytes(p.activation_bytes),
        ]
        if cuda:
            row.append(fmt_bytes(p.peak_bytes))
        status = p.status if p.ok else f"{p.status}: {p.reason}"
        row += [fmt_ratio(vs.get("forward")), fmt_ratio(vs.get("train")), status]
        rows.append(row)
    return headers, rows


def console_table(result: SweepResult | dict[str, Any]) -> str:
    """The sweep as aligned text tables, one per batch size."""
    result = as_sweep(result)
    parts = []
    batches = result.settings.batches if result.points else []
    for batch in batches:
        headers, rows = _rows(result, batch, markdown=False)
        parts.append(f"batch {batch}\n" + format_table(headers, rows))
    if result.crossovers:
        parts.append(
            "crossovers vs SDPA self-attention (tokens)\n" + format_table(*_crossover_rows(result))
        )
    return "\n\n".join(parts)


def _crossover_rows(result: SweepResult) -> tuple[list[str], list[list[Any]]]:
    by_key: dict[tuple[str, int], dict[str, str]] = {}
    for c in result.crossovers:
        by_key.setdefault((c.mixer, c.batch), {})[c.metric] = c.text
    headers = ["mixer", "batch", *(METRIC_LABELS[m] for m in ("flops", "forward", "train"))]
    rows = [
        [
            result.label(m),
            b,
            *(v.get(k, "-") for k in ("flops", "forward", "train")),
        ]
        for (m, b), v in by_key.items()
    ]
    return headers, rows


def _target_rows(result: SweepResult) -> list[list[Any]]:
    rows = []
    for t in result.targets:
        if t.error is not None:
            rows.append([t.description or t.name, "-", "-", f"not measured: {t.error}"])
            continue
        if t.ratio is not None:
            r = t.ratio["ratio"]
            value = f"{t.value:.3f}x (IQR {r['q1']:.3f}-{r['q3']:.3f}, {r['n']} pairs)"
            goal = f"{t.op} {t.target}x"
        else:
            value = fmt_bytes(t.value)
            goal = f"{t.op} {fmt_bytes(t.target)}"
        verdict = {True: "met", False: "missed", None: "-"}[t.passed]
        if t.memory_passed is not None:
            verdict = (
                f"speed {'met' if t.speed_passed else 'missed'}, memory "
                f"{'met' if t.memory_passed else 'missed'}"
            )
        if t.activation_bytes_ours is not None:
            verdict += (
                f"; activations ours {fmt_bytes(t.activation_bytes_ours)} vs peer "
                f"{fmt_bytes(t.activation_bytes_peer)}"
            )
        if t.train_ms is not None:
            verdict += f"; fwd+bwd {fmt_ms(t.train_ms)} ms"
        rows.append([t.description, value, goal, verdict])
    return rows


def markdown_report(
    result: SweepResult | dict[str, Any],
    plots: Sequence[str | Path] = (),
    title: str = "Token mixers",
) -> str:
    """The sweep as a markdown document (plots linked by file name, relative)."""
    result = as_sweep(result)
    s = result.settings
    machine = result.machine or {}
    lines = [f"# {title}: cost against resolution", ""]
    if result.command:
        lines += ["Made by:", "", "```", result.command, "```", ""]
    lines += [
        f"Width d={s.dim}, {s.heads} heads (self-attention, multi-head EA, LA), EA "
        f"S={s.memory_size}, lambda k={s.lambda_k} h={s.lambda_heads} "
        f"u={s.lambda_u} r={s.lambda_r} (local) or global; {s.dtype} on "
        f"{s.device}; batches {', '.join(map(str, s.batches))}; {s.warmup} warm-up "
        f"call(s), {s.repeats} timed runs, {s.pairs} interleaved pairs per ratio, "
        f"{s.max_seconds:g} s and {s.max_memory_gb:g} GiB budget per point.",
        "",
        "## Machine",
        "",
        machine_markdown(machine),
        "",
    ]
    if not str(machine.get("device", "cpu")).startswith("cuda"):
        lines += [
            "CUDA figures are missing: this run had no GPU, so there is no peak-memory "
            "column and no figure for SDPA's flash or memory-efficient CUDA kernels "
            "(on CPU SDPA runs its fused flash-style CPU kernel).",
            "",
        ]
    note = load_note(machine)
    if note:
        lines += [note, ""]
    if result.targets:
        lines += [
            "## Targets",
            "",
            "Every ratio is the median of pair-by-pair ratios of interleaved runs "
            "(A B, B A, ...), with its inter-quartile range.",
            "",
            format_table(
                ["target", "measured", "goal", "verdict"], _target_rows(result), markdown=True
            ),
            "",
        ]
    if result.crossovers:
        lines += [
            "## Crossovers against SDPA self-attention",
            "",
            "Token count N* where the mixer becomes cheaper than SDPA self-attention, "
            "interpolated in log-log between swept sizes (`< N`: cheaper over the whole "
            "sweep; `> N`: still not cheaper at the largest size measured). Latency "
            "crossovers use the interleaved ratios.",
            "",
            format_table(*_crossover_rows(result), markdown=True),
            "",
        ]
    for batch in s.batches if result.points else []:
        headers, rows = _rows(result, batch, markdown=True)
        lines += [f"## Batch {batch}", "", format_table(headers, rows, markdown=True), ""]
        for p in plots:
            name = Path(p).name
            if f"_b{batch}_" in name:
                lines += [f"![{name}]({name})", ""]
    if result.compile:
        rows = []
        for c in result.compile:
            if not c.ok:
                rows.append([result.label(c.mixer), "-", "-", "-", f"failed: {c.reason}"])
                continue
            rows.append(
                [
                    result.label(c.mixer),
                    fmt_ratio(c.forward),
                    fmt_ratio(c.train),
                    f"{c.compile_forward_s + c.compile_train_s:.0f} s",
                    "ok",
                ]
            )
        g = s.compile_grid
        lines += [
            f"## torch.compile speed-up ({g[0]}x{g[1]} tokens, batch {s.batches[0]})",
            "",
            "Eager time / compiled time, interleaved.",
            "",
            format_table(
                ["mixer", "forward", "forward+backward", "compile time", "status"],
                rows,
                markdown=True,
            ),
            "",
        ]
    lines += [
        "## Mixers",
        "",
        format_table(
            ["name", "label", "role", "what is measured"],
            [[n, m.label, m.role, m.description] for n, m in result.mixers.items()],
            markdown=True,
        ),
        "",
    ]
    if result.unavailable:
        lines += [f"Not installed here, so not measured: {', '.join(result.unavailable)}.", ""]
    lines += ["## Method", "", *METHOD_NOTES, ""]
    return "\n".join(lines)


METHOD_NOTES = [
    "- Latency: warm-up calls, then repeated timed calls; the median and the inter-quartile "
    "range are reported. Forward runs in eval mode without autograd; forward+backward runs "
    "in train mode and takes the gradients of the parameters and of the input "
    "(`torch.autograd.grad` with a fixed random output gradient).",
    "- Ratios (targets, `/ SDPA` columns, crossovers in latency, compile speed-ups): the two "
    "contenders run interleaved, pair after pair, the order alternating inside consecutive "
    "pairs; the figure is the median of the pair-by-pair ratios. The machine is shared, so "
    "absolute latencies move with its load while these ratios stay comparatively stable.",
    "- Activation memory: the distinct storages the forward pass saves for backward, found "
    "with `torch.autograd.graph.saved_tensors_hooks` (parameters excluded; a view or a "
    "tensor saved twice counts once; the saved input of the first projection counts).",
    "- FLOPs: FlopCounterMode with the formula of `beyond_attention.flops` for the fused CPU "
    "SDPA kernel: matrix products and convolutions at 2 FLOPs per multiply-accumulate; plus "
    "the FFT-based correlations of the lambda layer (position lambdas with kernels above "
    "about 10x10 run through the FFT): 5 n log2 m FLOPs per complex transform (2.5 n log2 m "
    "for a real one) and 6 per complex product. Softmax, normalisations and other "
    "elementwise operations are not counted.",
    "- The less-attention layer transforms the previous layer's attention: its input state "
    "comes from one vanilla attention layer of the same configuration, run beforehand on the "
    "same input and not timed.",
    "- A point whose memory (activations plus parameters and their gradients) or training "
    "time, extrapolated from the previous sizes, exceeds the budget is skipped and recorded; "
    "a measured call over the time budget is recorded as too slow.",
]


# ---------------------------------------------------------------------------------------------
# plots

_STYLE = {"mixer": "-", "baseline": "--", "peer": ":"}


def _series(result: SweepResult, batch: int, key: str) -> dict[str, tuple[list[int], list[float]]]:
    out: dict[str, tuple[list[int], list[float]]] = {}
    for p in result.points:
        if p.batch != batch or not p.ok:
            continue
        v = getattr(p, key)
        if isinstance(v, dict):
            v = v.get("median")
        if v is None or v <= 0:
            continue
        xs, ys = out.setdefault(p.mixer, ([], []))
        xs.append(p.tokens)
        ys.append(float(v))
    return out


# one colour per mixer; a peer shares the colour of the library layer it is compared with
_COLORS = {
    "self": "#000000",
    "naive": "#7f7f7f",
    "ea_gemms": "#17becf",
    "external": "#d62728",
    "external_mh": "#ff7f0e",
    "lambda": "#1f77b4",
    "lambda_peer": "#1f77b4",
    "lambda_global": "#9467bd",
    "lambda_global_peer": "#9467bd",
    "less": "#e377c2",
    "vanilla_sr": "#bcbd22",
    "less_sr": "#2ca02c",
    "mlp_mixer": "#8c564b",
    "feedforward": "#393b79",
}
_FALLBACK = ["#637939", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354"]


def _colors(result: SweepResult) -> dict[str, str]:
    """A fixed colour per mixer (SDPA black; peers in the colour of their counterpart)."""
    others = [n for n in result.mixers if n not in _COLORS]
    return {
        **{n: _FALLBACK[i % len(_FALLBACK)] for i, n in enumerate(others)},
        **{n: c for n, c in _COLORS.items() if n in result.mixers},
    }


def _plot_panel(
    ax: Any, result: SweepResult, batch: int, key: str, ylabel: str, metric: str | None
) -> None:
    from matplotlib.ticker import NullLocator

    series = _series(result, batch, key)
    colors = _colors(result)
    for name, (xs, ys) in series.items():
        info = result.mixers.get(name)
        ax.plot(
            xs,
            ys,
            _STYLE.get(info.role if info else "mixer", "-"),
            marker="o",
            markersize=3,
            label=result.label(name),
            color=colors.get(name, "k"),
            linewidth=2.2 if name == "self" else 1.3,
        )
    if metric and "self" in series:
        sx, sy = series["self"]
        for c in result.crossovers:
            if c.batch != batch or c.metric != metric or c.status != CROSSES:
                continue
            y = interpolate_loglog(sx, sy, c.tokens) if len(sx) > 1 else sy[0]
            ax.plot(
                [c.tokens],
                [y],
                marker="X",
                markersize=9,
                linestyle="none",
                color=colors.get(c.mixer, "k"),
                markeredgecolor="k",
            )
            ax.annotate(
                f"{c.tokens:,.0f}",
                (c.tokens, y),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=7,
                color=colors.get(c.mixer, "k"),
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = sorted({p.tokens for p in result.points if p.batch == batch})
    grids = {p.tokens: p.grid for p in result.points}
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{n:,}\n{grids[n][0]}x{grids[n][1]}" for n in ticks], fontsize=8)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("tokens N")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def write_plots(
    result: SweepResult | dict[str, Any], out_dir: str | Path, prefix: str = "mixers"
) -> list[Path]:
    """Log-log plots against tokens, one line per mixer, crossovers with SDPA marked (X).

    Per batch: ``{prefix}_b{B}_latency.png`` (forward and forward+backward) and
    ``{prefix}_b{B}_memory.png`` (activation memory and FLOPs). Returns the paths written.
    """
    import matplotlib

    result = as_sweep(result)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if not result.points:
        return paths
    device = (result.machine or {}).get("device", result.settings.device)
    d = result.settings.dim
    panels = {
        "latency": [
            ("forward_ms", "forward latency (ms)", "forward"),
            ("train_ms", "forward+backward latency (ms)", "train"),
        ],
        "memory": [
            ("activation_bytes", "activation memory saved for backward (bytes)", None),
            ("flops", "forward FLOPs", "flops"),
        ],
    }
    for batch in result.settings.batches:
        for kind, spec in panels.items():
            fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
            for ax, (key, ylabel, metric) in zip(axes, spec, strict=True):
                _plot_panel(ax, result, batch, key, ylabel, metric)
            handles, labels = axes[0].get_legend_handles_labels()
            fig.legend(
                handles,
                labels,
                loc="lower center",
                ncol=min(6, max(1, len(labels))),
                fontsize=8,
                frameon=False,
            )
            fig.suptitle(
                f"token mixers, d={d}, batch {batch}, {device}  "
                "(X: where a mixer becomes cheaper than SDPA self-attention)",
                fontsize=10,
            )
            fig.tight_layout(rect=(0, 0.1, 1, 0.95))
            path = out_dir / f"{prefix}_b{batch}_{kind}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            paths.append(path)
    return paths
