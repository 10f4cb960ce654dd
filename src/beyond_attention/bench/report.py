"""Shared pieces of the benchmark reports: machine description, tables, JSON, number formats."""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write_json
from ..tables import fmt_bytes, fmt_num, format_table

__all__ = ["fmt_bytes", "fmt_num", "format_table"]


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where available)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, threads, torch, device."""
    device = torch.device(device)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    with contextlib.suppress(AttributeError, OSError):
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    if device.type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    try:
        from beyond_attention import __version__

        info["beyond_attention"] = __version__
    except ImportError:  # pragma: no cover
        pass
    return info


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that made a report, as a user would type it."""
    args = list(sys.argv[1:] if argv is None else argv)
    return "beyond-attention " + " ".join(shlex.quote(a) for a in args)


def to_jsonable(obj: Any) -> Any:
    """Recursively turn tuples, paths and non-finite floats into JSON-friendly values."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.dtype):
        return str(obj).removeprefix("torch.")
    if isinstance(obj, torch.device):
        return str(obj)
    return obj


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON atomically (creating parent folders); returns the
    path."""
    path = Path(path)
    atomic_write_json(path, to_jsonable(payload))
    return path


def fmt_ms(summary: dict[str, Any] | None) -> str:
    """``median [q1-q3]`` milliseconds from a timing summary dict."""
    if not summary:
        return "-"
    med = summary["median"]
    return f"{fmt_num(med)} [{fmt_num(summary['q1'])}-{fmt_num(summary['q3'])}]"


def fmt_ratio(r: dict[str, Any] | None) -> str:
    """``median x [q1-q3]`` of an interleaved ratio dict (``{"ratio": summary, ...}``)."""
    if not r:
        return "-"
    s = r["ratio"]
    return f"{fmt_num(s['median'])}x [{fmt_num(s['q1'])}-{fmt_num(s['q3'])}]"


def machine_line(machine: dict[str, Any]) -> str:
    """The machine in one line: CPU, cores, threads, torch, device (GPU), date, load."""
    parts = [str(machine.get("cpu", "unknown CPU"))]
    cores, usable = machine.get("cpu_count"), machine.get("usable_cores")
    if cores:
        parts.append(f"{cores} cores" + (f" ({usable} usable)" if usable and usable != cores
                                         else ""))
    if machine.get("torch_threads"):
        parts.append(f"torch threads {machine['torch_threads']}")
    if machine.get("torch"):
        parts.append(f"torch {machine['torch']}")
    device = str(machine.get("device", "cpu"))
    if machine.get("gpu"):
        device += f" ({machine['gpu']}, {machine.get('gpu_memory_gib', '?')} GiB)"
    parts.append(f"device {device}")
    if machine.get("date"):
        parts.append(str(machine["date"]))
    load = machine.get("load_average")
    if load:
        parts.append(f"load average {', '.join(map(str, load))} at the start")
    return ", ".join(parts)


def machine_markdown(machine: dict[str, Any]) -> str:
    """The machine as a two-column markdown table."""
    rows = [
        [k, v if not isinstance(v, list) else ", ".join(map(str, v))] for k, v in machine.items()
    ]
    return format_table(["", "value"], rows, markdown=True)


def load_note(
    machine: dict[str, Any], interleaved: bool = True, tail: str | None = None
) -> str | None:
    """A warning when the machine was busier than its cores during the run, else None.

    ``tail`` replaces the sentence's end (what the reader can still trust)."""
    load = machine.get("load_average")
    cores = machine.get("usable_cores") or machine.get("cpu_count")
    if not load or not cores or str(machine.get("device", "cpu")).startswith("cuda"):
        return None
    if load[0] <= cores:  # the 1-minute average when the run started
        return None
    head = (
        f"The machine was shared during this run (load average {', '.join(map(str, load))} "
        f"on {cores} cores at its start): absolute figures are inflated and noisy; "
    )
    if tail is not None:
        return head + tail
    if interleaved:
        return head + (
            "ratios come from interleaved runs, which see the same load, and are the "
            "figures to trust."
        )
    return head + "the reference GEMM rate was measured under the same load."
