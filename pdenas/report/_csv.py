"""``trials.csv`` (a row a trial), ``pareto.csv`` (the Pareto set, sorted by MACs) and ``stages.csv`` (where a
Global layer pays, a row per stage and kept blocks), written with pandas."""

from __future__ import annotations

from pathlib import Path

from ._data import ReportData

__all__ = ["write_csvs", "TRIALS_CSV", "PARETO_CSV", "STAGES_CSV"]

TRIALS_CSV = "trials.csv"
PARETO_CSV = "pareto.csv"
STAGES_CSV = "stages.csv"


def write_csvs(data: ReportData, out_dir: str | Path) -> tuple[Path, Path, Path]:
    """Write the three files into ``out_dir``; returns their paths (trials, pareto, stages)."""
    out_dir = Path(out_dir)
    trials_path, pareto_path, stages_path = out_dir / TRIALS_CSV, out_dir / PARETO_CSV, out_dir / STAGES_CSV
    data.trials_frame.to_csv(trials_path, index=False)
    data.pareto_frame().to_csv(pareto_path, index=False)
    data.stages_frame().to_csv(stages_path, index=False)
    return trials_path, pareto_path, stages_path
