"""Exporters: one trace of the score network, the composed graph family, torch files, validation, manifest.

``export_model(model, output_dir, ...)`` is the library entry point behind ``ncsn-export``;
``validate_export(export_dir, model)`` validates an export directory on its own (docs/design.md).
"""

from .api import ExportReport, export_model
from .errors import ExportError
from .validate import ValidationReport, validate_export

__all__ = ["ExportError", "ExportReport", "ValidationReport", "export_model", "validate_export"]
