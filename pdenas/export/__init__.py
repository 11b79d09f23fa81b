"""Export: a chosen trial rebuilt, trained and saved (``export_trial``, behind ``pdenas export``), the
writers that turn any model into a deployable file (``export_onnx``, ``export_torchscript``, ``export_aoti``),
and the model card every exported file carries (``ModelCard``, ``Preprocessing``: how to feed the model,
its classes)."""

from ._card import CARD_KEY, ModelCard, Preprocessing
from ._errors import ExportError
from ._formats import (
    aoti_runner,
    check_formats,
    export_aoti,
    export_onnx,
    export_torchscript,
    onnx_runner,
    onnx_session,
)
from ._trial import FORMATS, TOLERANCE, ExportResult, export_table, export_trial, parse_formats

__all__ = [
    "aoti_runner",
    "CARD_KEY",
    "check_formats",
    "export_aoti",
    "export_onnx",
    "export_table",
    "export_torchscript",
    "export_trial",
    "ExportError",
    "ExportResult",
    "FORMATS",
    "ModelCard",
    "onnx_runner",
    "onnx_session",
    "parse_formats",
    "Preprocessing",
    "TOLERANCE",
]
