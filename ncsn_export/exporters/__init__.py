"""Exporters: ONNX (score, step, fused sampler), TorchScript, torch.export; validation; export directories.

``export_model(model, output_dir, ...)`` is the library entry point behind ``ncsn-export``.
"""

from .api import ExportReport, export_model
from .errors import ExportError

__all__ = ["ExportError", "ExportReport", "export_model"]
