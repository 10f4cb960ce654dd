"""Measure which models export and what they cost: ``python -m beyond_attention.export.report
[MODEL ...] [--out benchmarks/export.md]``.

Per model (default: the ``*_cifar`` variants, random weights, their config's input size):
the ONNX export (opset, file size, parity against PyTorch on 3 seeded random inputs), the
median latency of onnxruntime and of eager PyTorch at batch 8 (interleaved, a few repeats:
a short run), and ``torch.export`` agreement. Written as a markdown table, atomically.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from ..io import atomic_write_bytes
from ..tables import fmt_bytes, format_table


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def measure(name: str, batch: int = 8, repeats: int = 5) -> list[str]:
    """One table row for ``name``."""
    import onnxruntime as ort

    import beyond_attention.models  # noqa: F401
    from beyond_attention.models._registry import create_model, get_model_config

    from .compiled import check_torch_export
    from .onnx import DEFAULT_OPSET, ExportError, export_onnx, onnx_bytes

    c, h, w = get_model_config(name).input_size
    torch.manual_seed(0)
    model = create_model(name).eval()
    gen = torch.Generator().manual_seed(0)
    try:
        result = export_onnx(model, None, torch.randn(3, c, h, w, generator=gen))
    except ExportError as e:
        return [name, "no", str(DEFAULT_OPSET), "", "", "", "", str(e)[:60]]
    session = ort.InferenceSession(onnx_bytes(model, torch.randn(2, c, h, w)),
                                   providers=["CPUExecutionProvider"])
    x = torch.randn(batch, c, h, w, generator=gen)
    feed = {session.get_inputs()[0].name: x.numpy()}
    with torch.no_grad():
        t_torch = _median_ms(lambda: model(x), repeats)
    t_ort = _median_ms(lambda: session.run(None, feed), repeats)
    exported = check_torch_export(model, torch.randn(2, c, h, w), x)
    return [name, "yes", str(result.opset), fmt_bytes(result.size_bytes),
            f"{result.parity.max_abs_diff:.2g}", f"{t_ort:.1f}", f"{t_torch:.1f}",
            f"torch.export max diff {exported.output:.2g}"]


def main(argv: list[str] | None = None) -> int:
    from beyond_attention import list_models

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    names = args.models or list_models("*_cifar*")
    torch.set_num_threads(1)
    rows = []
    for name in names:
        rows.append(measure(name))
        print(" | ".join(rows[-1]), flush=True)
    table = format_table(["model", "exports", "opset", "file", "parity max abs diff",
                          "onnxruntime ms (batch 8)", "PyTorch ms (batch 8)", "note"],
                         rows, markdown=True)
    if args.out:
        atomic_write_bytes(args.out, (table + "\n").encode())
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
