"""ONNX export of any registered model, written only after onnxruntime agrees with PyTorch.

The exporter is ``torch.onnx.export(..., dynamo=True)`` (the ``torch.export``-based one): it
exports every registered model with a dynamic batch axis. The TorchScript exporter
(``dynamo=False``) fails on two of the small models (LaViT's adaptive pooling to a traced
size, and a batch size frozen into a ``cat`` of EAMLP), so it is not used.

The custom autograd Functions (external attention's double normalisation, the lambda
layer's correlations) take a plain-ops branch while exporting
(``torch.compiler.is_exporting()``); it computes the same formula, and training never
takes it.

Parity: the exported graph runs in onnxruntime (CPU) on inputs of a batch size other than
the one traced (so the dynamic axis is exercised), and the largest absolute difference
from the PyTorch model's output must be within ``atol + rtol * max|PyTorch output|``.
Only then is the file written, atomically (:func:`beyond_attention.io.atomic_write_bytes`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io import atomic_write_bytes

#: The ONNX opset exported by default (the dynamo exporter's own default).
DEFAULT_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "images", "logits"


class ExportError(RuntimeError):
    """The model could not be exported, or the exported graph disagrees with PyTorch."""


@dataclass
class Parity:
    """onnxruntime against PyTorch on the same inputs.

    Attributes:
        max_abs_diff: the largest absolute difference of the outputs.
        tolerance: the allowed difference, ``atol + rtol * max_abs_ref``.
        max_abs_ref: the largest absolute PyTorch output.
        batch: the batch size compared.
    """

    max_abs_diff: float
    tolerance: float
    max_abs_ref: float
    batch: int

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance


@dataclass
class OnnxExport:
    """What :func:`export_onnx` did: the file, its size, the opset, the parity."""

    path: str | None
    opset: int
    size_bytes: int
    parity: Parity
    export_seconds: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["parity"]["ok"] = self.parity.ok
        return d


def onnx_bytes(model: nn.Module, example: torch.Tensor, opset: int = DEFAULT_OPSET) -> bytes:
    """Export ``model`` (in eval mode) traced at ``example`` ``(B, C, H, W)`` to a serialised
    ONNX model with a dynamic batch axis (input ``images``, output ``logits``).

    Raises:
        ExportError: the exporter fails (its message is kept).
    """
    import warnings

    if example.ndim != 4:
        raise ValueError(f"example must be a (B, C, H, W) batch, got shape {tuple(example.shape)}")
    model.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},), verbose=False,
                report=False)
    except Exception as e:  # the exporter raises many types; keep the first line of each
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"ONNX export of {type(model).__name__} failed: {first}") from e
    return program.model_proto.SerializeToString()


def run_onnxruntime(model_bytes: bytes, inputs: torch.Tensor) -> torch.Tensor:
    """Run a serialised ONNX model on ``inputs`` with onnxruntime's CPU provider."""
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: inputs.detach().cpu().numpy()})
    return torch.from_numpy(out)


def check_parity(model: nn.Module, model_bytes: bytes, inputs: torch.Tensor,
                 atol: float = 1e-4, rtol: float = 1e-4) -> Parity:
    """Compare onnxruntime's output on ``inputs`` with ``model``'s (eval mode, float32)."""
    model.eval()
    with torch.no_grad():
        ref = model(inputs).float().cpu()
    got = run_onnxruntime(model_bytes, inputs)
    if got.shape != ref.shape:
        raise ExportError(f"onnxruntime output shape {tuple(got.shape)} differs from "
                          f"PyTorch's {tuple(ref.shape)}")
    scale = float(ref.abs().max())
    diff = float((got - ref).abs().max())
    return Parity(diff, atol + rtol * scale, scale, int(inputs.shape[0]))


def export_onnx(model: nn.Module, path: str | Path | None, inputs: torch.Tensor, *,
                opset: int = DEFAULT_OPSET, atol: float = 1e-4, rtol: float = 1e-4,
                trace_batch: int = 2) -> OnnxExport:
    """Export ``model`` to ONNX, check it against PyTorch on ``inputs``, then write it.

    Args:
        model: any registered model (moved to CPU, eval mode).
        path: the ``.onnx`` file; None checks without writing.
        inputs: ``(B, C, H, W)`` normalised float inputs for the parity check (real
            images where available); B should differ from ``trace_batch``.
        opset: the ONNX opset.
        atol, rtol: the parity tolerance (:class:`Parity`).
        trace_batch: the batch size traced (the exported batch axis is dynamic).

    Raises:
        ExportError: the export fails or parity does not hold; nothing is written then.
    """
    if inputs.ndim != 4 or inputs.shape[0] < 1:
        raise ValueError(f"inputs must be a (B, C, H, W) batch, got {tuple(inputs.shape)}")
    model = model.cpu().eval()
    inputs = inputs.detach().float().cpu()
    example = inputs[:1].expand(trace_batch, -1, -1, -1).contiguous()
    t0 = time.perf_counter()
    data = onnx_bytes(model, example, opset)
    seconds = time.perf_counter() - t0
    parity = check_parity(model, data, inputs, atol, rtol)
    if not parity.ok:
        raise ExportError(
            f"onnxruntime disagrees with PyTorch: max abs difference {parity.max_abs_diff:.3g} "
            f"> tolerance {parity.tolerance:.3g} (batch {parity.batch}); "
            f"{'nothing written' if path else 'not exported'}")
    if path is not None:
        atomic_write_bytes(path, data)
    return OnnxExport(None if path is None else str(path), opset, len(data), parity, seconds)
