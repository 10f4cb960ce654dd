"""Deploying models: ONNX export with an onnxruntime parity check (:mod:`.onnx`), and the
``torch.compile`` / ``torch.export`` equivalence checks (:mod:`.compiled`).

``onnx``, ``onnxscript`` and ``onnxruntime`` come with the ``export`` extra; they are
imported only when an export runs.
"""

from .onnx import DEFAULT_OPSET, ExportError, OnnxExport, Parity, check_parity, export_onnx

__all__ = ["DEFAULT_OPSET", "ExportError", "OnnxExport", "Parity", "check_parity",
           "export_onnx"]
