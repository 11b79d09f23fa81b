"""The report of a pdenas study: what the search found, for a person to read and pick from.

``write_report(DIR)`` writes ``report.html`` (Pareto fronts, hypervolume, importances, the Pareto table,
where a Global layer pays stage by stage, and the settings; self-contained, opens offline),
``trials.csv``, ``pareto.csv`` and ``stages.csv`` into the study directory. ``print_pareto`` shows the Pareto table in a terminal; ``select_trial`` resolves ``--trial``
(a number or ``pareto:best-accuracy`` / ``pareto:smallest`` / ``pareto:knee``).

Everything is computed first into a :class:`ReportData` (``build_report_data``); the page, the CSV files
and the terminal only draw it.
"""

from ._data import ReportData, TrialSummary, build_report_data
from ._errors import ReportError
from ._select import select_trial
from ._study_dir import locate_study, open_study
from ._stages import StageChoice, StageVariantSummary, StageView, stage_view
from ._terminal import print_pareto, print_stage_verdicts
from ._write import write_report

__all__ = [
    "ReportData",
    "ReportError",
    "StageChoice",
    "StageVariantSummary",
    "StageView",
    "TrialSummary",
    "build_report_data",
    "locate_study",
    "open_study",
    "print_pareto",
    "print_stage_verdicts",
    "select_trial",
    "stage_view",
    "write_report",
]
