"""Export: a chosen trial rebuilt, trained and saved (``export_trial``, behind ``pdenas export``), and the
writers that turn any model into a deployable file (``export_onnx``, ``export_torchscript``, ``export_aoti``)."""

from ._errors import ExportError
from ._formats import aoti_runner, check_formats, export_aoti, export_onnx, export_torchscript, onnx_runner, onnx_session
from ._trial import FORMATS, TOLERANCE, ExportResult, export_table, export_trial, parse_formats

__all__ = [
    "aoti_runner",
    "check_formats",
    "export_aoti",
    "export_onnx",
    "export_table",
    "export_torchscript",
    "export_trial",
    "ExportError",
    "ExportResult",
    "FORMATS",
    "onnx_runner",
    "onnx_session",
    "parse_formats",
    "TOLERANCE",
]
