"""``pdenas report DIR``: write report.html, trials.csv and pareto.csv for a study."""

from __future__ import annotations

from pathlib import Path

import optuna

from ._csv import write_csvs
from ._data import build_report_data
from ._errors import ReportError
from ._html import render_html
from ._study_dir import open_study
from .._util import atomic_write_text

__all__ = ["write_report", "REPORT_HTML"]

REPORT_HTML = "report.html"


def write_report(study_or_dir: optuna.Study | str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the report of a study (or of the study kept in a study directory); returns report.html's path.

    ``out_dir`` defaults to the study directory; it is required when a Study object is given.
    """
    study_dir: Path | None = None
    if isinstance(study_or_dir, optuna.Study):
        study = study_or_dir
        if out_dir is None:
            raise ReportError("write_report(study) needs out_dir: pass the folder to write report.html into")
    else:
        study_dir = Path(study_or_dir)
        study = open_study(study_dir)
    out = Path(out_dir) if out_dir is not None else study_dir
    assert out is not None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportError(f"cannot create the report folder {out} ({err.strerror}): choose a writable folder") from None
    data = build_report_data(study, study_dir=study_dir)
    page = out / REPORT_HTML
    atomic_write_text(page, render_html(data))
    write_csvs(data, out)
    return page
