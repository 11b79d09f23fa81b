"""Export: a chosen trial rebuilt, trained and saved (``export_trial``, behind ``pdenas export``), the
writers that turn any model into a deployable file (``export_onnx``, ``export_torchscript``, ``export_aoti``),
the model card every exported file carries (``ModelCard``, ``Preprocessing``: how to feed the model, its
classes), and the evaluation of an exported file on labelled images (``evaluate_model``, behind
``pdenas evaluate``)."""

from ._card import CARD_KEY, ModelCard, Preprocessing
from ._errors import ExportError
from ._evaluate import Evaluation, evaluate_model, evaluation_table
from ._formats import (
    aoti_runner,
    check_formats,
    export_aoti,
    export_onnx,
    export_torchscript,
    onnx_runner,
    onnx_session,
)
from ._load import LoadedModel, load_exported, model_kind
from ._trial import FORMATS, TOLERANCE, ExportResult, export_table, export_trial, parse_formats

__all__ = [
    "aoti_runner",
    "CARD_KEY",
    "check_formats",
    "Evaluation",
    "evaluate_model",
    "evaluation_table",
    "export_aoti",
    "export_onnx",
    "export_table",
    "export_torchscript",
    "export_trial",
    "ExportError",
    "ExportResult",
    "FORMATS",
    "load_exported",
    "LoadedModel",
    "ModelCard",
    "model_kind",
    "onnx_runner",
    "onnx_session",
    "parse_formats",
    "Preprocessing",
    "TOLERANCE",
]
