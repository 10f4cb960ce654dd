"""The report of ``beyond-attention bench points``: tables, markdown and the cost plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import atomic_write
from .points import PointsResult, format_growth, format_point_mixers
from .report import load_note, machine_line, machine_markdown

__all__ = ["PLOT_NAME", "as_points_result", "console_table", "markdown_report", "write_plot"]

PLOT_NAME = "points_cost.png"

_COLORS = {"external": "#d62728", "offset": "#1f77b4", "sdpa": "#000000"}
_LABELS = {
    "external": "EA in PCT's offset block",
    "offset": "offset-attention (PCT)",
    "sdpa": "SDPA self-attention (NPCT)",
}


def as_points_result(result: PointsResult | dict[str, Any]) -> PointsResult:
    """``result`` as a :class:`PointsResult` (a JSON dict is read)."""
    return result if isinstance(result, PointsResult) else PointsResult.from_json(result)


def console_table(result: PointsResult | dict[str, Any]) -> str:
    """The measurements and the memory growth as aligned text tables."""
    result = as_points_result(result)
    return (format_point_mixers(result.rows) + "\n\nactivation memory growth\n"
            + format_growth(result.growth))


def _setup_line(result: PointsResult) -> str:
    s = result.settings
    return (f"C = {s.channels} channels, batch {s.batch}, EA memory S = {s.memory_size}, "
            f"{s.dtype} on {s.device}; {s.warmup} warm-up call(s) and {s.repeats} timed calls "
            "per latency, median reported.")


def markdown_report(result: PointsResult | dict[str, Any], plot: str | None = None) -> str:
    """The run as a markdown document; ``plot`` is the plot's file name beside it."""
    result = as_points_result(result)
    machine = result.machine or {}
    lines = ["# Point mixers: latency and activation memory against N", ""]
    if result.command:
        lines += ["Made by:", "", "```", result.command, "```", ""]
    lines += [
        f"Machine: {machine_line(machine)}" if machine else "Machine: not recorded.",
        "",
        _setup_line(result),
        "",
        "One layer on (B, C, N) point features: `external` is EA in PCT's offset block "
        "(arXiv:2105.02358, linear in N), `offset` PCT's offset-attention with its N x N "
        "map (arXiv:2012.09688, Sec. 3.3), `sdpa` the naive PCT's scaled dot-product "
        "self-attention through `torch.nn.functional.scaled_dot_product_attention`. "
        "`forward ms`: eval mode without autograd; `fwd+bwd ms`: a training forward and "
        "the backward to the input and the parameters. `activations`: bytes the training "
        "forward saves for backward (each storage once). `N x N (pred.)`: the predicted "
        "peak of the N x N attention in a forward + backward, which decides the "
        "`--max-memory-gb` skips.",
        "",
    ]
    note = load_note(machine, tail="the activation memory is exact whatever the load.")
    if note:
        lines += [note, ""]
    lines += ["## Results", "", format_point_mixers(result.rows, markdown=True), ""]
    lines += [
        "## Memory growth",
        "",
        "The exponent p of activation memory ~ N^p between the two largest measured N "
        "(below 1.5: linear, from 1.5 on: quadratic; at small N the linear terms, "
        "projections and normalisations, still hide part of an N^2 map).",
        "",
        format_growth(result.growth, markdown=True),
        "",
    ]
    if plot:
        lines += [f"![latency and activation memory against points]({plot})", ""]
    lines += ["## Machine", "", machine_markdown(machine), ""]
    return "\n".join(lines)


def _series(result: PointsResult, key: str) -> dict[str, tuple[list[int], list[float]]]:
    out: dict[str, tuple[list[int], list[float]]] = {}
    for r in result.rows:
        v = r.get(key)
        if "skipped" in r or not v or v <= 0:
            continue
        xs, ys = out.setdefault(r["mixer"], ([], []))
        xs.append(int(r["points"]))
        ys.append(float(v))
    return out


def write_plot(result: PointsResult | dict[str, Any], out_dir: str | Path) -> Path | None:
    """Log-log latency (forward dashed, forward + backward solid) and activation memory
    against N, one colour per mixer; written atomically as :data:`PLOT_NAME`. None when
    nothing was measured.
    """
    import matplotlib

    result = as_points_result(result)
    if not any("skipped" not in r for r in result.rows):
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    fig, (lat, mem) = plt.subplots(1, 2, figsize=(12, 4.8))
    for key, style, ax, suffix in (("fwd_bwd_ms", "-", lat, " fwd+bwd"),
                                   ("forward_ms", "--", lat, " forward"),
                                   ("activation_bytes", "-", mem, "")):
        for name, (xs, ys) in _series(result, key).items():
            # offset-attention drawn wider: its memory curve lies under SDPA's on CPU
            ax.plot(xs, ys, style, marker="o", markersize=3, color=_COLORS.get(name, "k"),
                    linewidth=3.0 if name == "offset" else 1.4,
                    label=_LABELS.get(name, name) + suffix)
    ticks = sorted({int(r["points"]) for r in result.rows})
    ylabels = ((lat, "latency (ms)"), (mem, "activation memory saved for backward (bytes)"))
    for ax, ylabel in ylabels:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{n:,}" for n in ticks], fontsize=8)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("points N")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    s = result.settings
    device = (result.machine or {}).get("device", s.device)
    fig.suptitle(f"point mixers, C={s.channels}, batch {s.batch}, {s.dtype}, {device}",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / PLOT_NAME
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path
