"""ONNX export of any registered model, written only after onnxruntime agrees with PyTorch.

The exporter is ``torch.onnx.export(..., dynamo=True)`` (the ``torch.export``-based one): it
exports every registered model with a dynamic batch axis. The TorchScript exporter
(``dynamo=False``) fails on two of the small models (LaViT's adaptive pooling to a traced
size, and a batch size frozen into a ``cat`` of EAMLP), so it is not used.

Inputs follow the model's task (:func:`input_spec`): ``images`` (B, C, H, W); point clouds
``points`` (B, C, N) with a dynamic point axis too; part segmentation ``points`` and
``category`` (B,) int64, the object category (PCT Sec. 3.4).

The custom autograd Functions (external attention's double normalisation, the lambda
layer's correlations) take a plain-ops branch while exporting
(``torch.compiler.is_exporting()``); it computes the same formula, and training never
takes it. So does the kNN search of the point models (ONNX has no ``cdist``). Checks on
input values (finite coordinates, category range) are skipped while tracing. Farthest
point sampling exports as one ``Scan`` over the sampled centres (traced once, so PCT's
512 + 256 centres export in seconds; unrolled, they took over 20 minutes).

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
POINTS_NAME, CATEGORY_NAME = "points", "category"
Inputs = torch.Tensor | tuple[torch.Tensor, ...]
"""A model's positional inputs: one tensor, or (points, category) for part segmentation."""


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


@dataclass(frozen=True)
class InputSpec:
    """The graph inputs of a model's task and their dynamic axes.

    Attributes:
        names: ONNX input names: ``images`` (B, C, H, W) for image classification and
            segmentation, ``points`` (B, C, N) for point-cloud classification, ``points``
            and ``category`` (B,) int64 for part segmentation.
        ndims: the number of dimensions of each input.
        min_points: the fewest points the model takes (point models; the point axis is
            dynamic from there on); None for image models, whose spatial size is fixed.
    """

    names: tuple[str, ...]
    ndims: tuple[int, ...]
    min_points: int | None = None

    def check(self, inputs: tuple[torch.Tensor, ...]) -> None:
        """Refuse inputs of the wrong count, rank or dtype, naming what was expected."""
        layouts = {INPUT_NAME: "(B, C, H, W)", POINTS_NAME: "(B, C, N)", CATEGORY_NAME: "(B,)"}
        expected = ", ".join(f"{n} {layouts[n]}" for n in self.names)
        if len(inputs) != len(self.names) or any(
                not isinstance(t, torch.Tensor) or t.ndim != d or t.shape[0] < 1
                for t, d in zip(inputs, self.ndims, strict=False)):
            got = ", ".join(str(tuple(t.shape)) if isinstance(t, torch.Tensor)
                            else type(t).__name__ for t in inputs)
            raise ValueError(f"inputs must be {expected} with B >= 1, got {got}")
        if CATEGORY_NAME in self.names and inputs[1].dtype not in (torch.int64, torch.int32):
            raise ValueError(f"inputs: category must be int64, got {inputs[1].dtype}")
        if inputs[0].shape[0] != inputs[-1].shape[0]:
            raise ValueError(f"inputs must share the batch size, got "
                             f"{[tuple(t.shape) for t in inputs]}")

    def dynamic_shapes(self) -> tuple[dict[int, Any], ...]:
        """``torch.export`` dynamic shapes: the batch axis of every input, and the point
        axis of a point cloud."""
        batch = torch.export.Dim("batch", min=1, max=4096)
        first: dict[int, Any] = {0: batch}
        if self.min_points is not None:
            first[2] = torch.export.Dim("num_points", min=max(self.min_points, 2),
                                        max=1 << 20)
        return (first, *({0: batch} for _ in self.names[1:]))


def input_spec(model: nn.Module) -> InputSpec:
    """The :class:`InputSpec` of ``model``'s task (``model.config.task``; a model built
    without a config is taken for an image model)."""
    config = getattr(model, "config", None)
    task = getattr(config, "task", "image_classification")
    if not task.startswith("pointcloud"):
        return InputSpec((INPUT_NAME,), (4,))
    min_points = int(getattr(model, "min_points", 1))
    if task == "pointcloud_part_segmentation":
        return InputSpec((POINTS_NAME, CATEGORY_NAME), (3, 1), min_points)
    return InputSpec((POINTS_NAME,), (3,), min_points)


def as_inputs(inputs: Inputs) -> tuple[torch.Tensor, ...]:
    """``inputs`` as a tuple of CPU tensors (float32 for the floating ones)."""
    tensors = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    return tuple(t.detach().cpu().float() if isinstance(t, torch.Tensor) and
                 t.is_floating_point() else t.detach().cpu() if isinstance(t, torch.Tensor)
                 else t for t in tensors)


def onnx_bytes(model: nn.Module, example: Inputs, opset: int = DEFAULT_OPSET) -> bytes:
    """:func:`onnx_program` serialised."""
    return onnx_program(model, example, opset).model_proto.SerializeToString()


def onnx_program(model: nn.Module, example: Inputs, opset: int = DEFAULT_OPSET) -> Any:
    """Export ``model`` (in eval mode) traced at ``example`` to an ``ONNXProgram`` (its
    ``model_proto`` the ONNX model, its ``exported_program`` the ``torch.export`` one).

    ``example`` is what the model's task takes (:func:`input_spec`): images (B, C, H, W);
    points (B, C, N); or (points, category (B,) int64) for part segmentation. The batch
    axis is dynamic, and so is the point axis N of a point cloud (from the model's
    ``min_points``). Inputs are named ``images`` / ``points`` / ``category``, the output
    ``logits``.

    Raises:
        ValueError: ``example`` does not fit the model's task.
        ExportError: the exporter fails (its message is kept).
    """
    import warnings

    spec = input_spec(model)
    example = as_inputs(example)
    spec.check(example)
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, example, dynamo=True, opset_version=opset,
                input_names=list(spec.names), output_names=[OUTPUT_NAME],
                dynamic_shapes=spec.dynamic_shapes(), verbose=False, report=False)
    except Exception as e:  # the exporter raises many types; keep the first line of each
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"ONNX export of {type(model).__name__} failed: {first}") from e
    return program


def onnx_session(model_bytes: bytes | str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session of a serialised ONNX model or file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = options.inter_op_num_threads = threads
    source = str(model_bytes) if isinstance(model_bytes, Path) else model_bytes
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_feed(session: Any, inputs: Inputs) -> dict[str, Any]:
    """The session's input names mapped to ``inputs`` as numpy arrays, in order."""
    tensors = as_inputs(inputs)
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(tensors):
        raise ValueError(f"the ONNX model takes {len(names)} inputs ({', '.join(names)}), "
                         f"got {len(tensors)}")
    return {n: t.numpy() for n, t in zip(names, tensors, strict=True)}


def run_onnxruntime(model_bytes: bytes, inputs: Inputs) -> torch.Tensor:
    """Run a serialised ONNX model on ``inputs`` with onnxruntime's CPU provider."""
    session = onnx_session(model_bytes)
    (out,) = session.run(None, onnx_feed(session, inputs))
    return torch.from_numpy(out)


def check_parity(model: nn.Module, model_bytes: bytes, inputs: Inputs,
                 atol: float = 1e-4, rtol: float = 1e-4) -> Parity:
    """Compare onnxruntime's output on ``inputs`` with ``model``'s (eval mode, float32)."""
    model.eval()
    tensors = as_inputs(inputs)
    with torch.no_grad():
        ref = model(*tensors).float().cpu()
    got = run_onnxruntime(model_bytes, tensors)
    if got.shape != ref.shape:
        raise ExportError(f"onnxruntime output shape {tuple(got.shape)} differs from "
                          f"PyTorch's {tuple(ref.shape)}")
    scale = float(ref.abs().max())
    diff = float((got - ref).abs().max())
    return Parity(diff, atol + rtol * scale, scale, int(tensors[0].shape[0]))


def trace_example(inputs: Inputs, batch: int = 2) -> tuple[torch.Tensor, ...]:
    """The first sample of every input repeated ``batch`` times (what is traced)."""
    return tuple(t[:1].expand(batch, *t.shape[1:]).contiguous() for t in as_inputs(inputs))


def export_onnx(model: nn.Module, path: str | Path | None, inputs: Inputs, *,
                opset: int = DEFAULT_OPSET, atol: float = 1e-4, rtol: float = 1e-4,
                trace_batch: int = 2) -> OnnxExport:
    """Export ``model`` to ONNX, check it against PyTorch on ``inputs``, then write it.

    Args:
        model: any registered model (moved to CPU, eval mode).
        path: the ``.onnx`` file; None checks without writing.
        inputs: what the model's task takes (:func:`input_spec`): normalised images
            ``(B, C, H, W)`` (real images where available), point clouds ``(B, C, N)``, or
            ``(points, category)`` for part segmentation; B should differ from
            ``trace_batch``.
        opset: the ONNX opset.
        atol, rtol: the parity tolerance (:class:`Parity`).
        trace_batch: the batch size traced (the exported batch axis is dynamic).

    Raises:
        ValueError: ``inputs`` do not fit the model's task.
        ExportError: the export fails or parity does not hold; nothing is written then.
    """
    model = model.cpu().eval()
    tensors = as_inputs(inputs)
    input_spec(model).check(tensors)
    t0 = time.perf_counter()
    data = onnx_bytes(model, trace_example(tensors, trace_batch), opset)
    seconds = time.perf_counter() - t0
    parity = check_parity(model, data, tensors, atol, rtol)
    if not parity.ok:
        raise ExportError(
            f"onnxruntime disagrees with PyTorch: max abs difference {parity.max_abs_diff:.3g} "
            f"> tolerance {parity.tolerance:.3g} (batch {parity.batch}); "
            f"{'nothing written' if path else 'not exported'}")
    if path is not None:
        atomic_write_bytes(path, data)
    return OnnxExport(None if path is None else str(path), opset, len(data), parity, seconds)
