"""Search overhead: the share of a trial's wall time not spent training and evaluating the candidate
(model building, stage finding, profiling, storage writes, the sampler).

    python benchmarks/bench_search_overhead.py                 # runs the default search into benchmarks/work/
    python benchmarks/bench_search_overhead.py --study-dir runs/default   # measures an existing study

Per trial, wall time is Optuna's own record (datetime_start to datetime_complete, storage included);
training and evaluation times are what the trial recorded. Goal: overhead under 5% of trial time.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pdenas.search import StudyLocation, open_storage, read_config  # noqa: E402
from pdenas.search import TrialRecord  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study-dir", type=Path)
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    directory = args.study_dir
    if directory is None:
        directory = ROOT / "benchmarks" / "work" / "search-overhead"
        subprocess.run(
            [sys.executable, "-m", "pdenas.cli", "search", "--study-dir", str(directory), "--trials", str(args.trials)],
            check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
        )
    config = read_config(directory)
    study = optuna.load_study(
        study_name=config["study_name"], storage=open_storage(StudyLocation(directory, config.get("storage"), config["study_name"]))
    )
    print(f"# search overhead, {datetime.date.today()}, {platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}")
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = TrialRecord.from_trial(t)
        if record.train_time is None or record.reused_from is not None or t.datetime_complete is None:
            continue  # reused or untrained trials have no training to compare with
        wall = (t.datetime_complete - t.datetime_start).total_seconds()
        work = record.train_time + (record.eval_time or 0.0)
        rows.append((t.number, wall, work, 1 - work / wall))
        print(f"trial {t.number:3d}: wall {wall:7.2f} s, train+eval {work:7.2f} s, overhead {100 * (1 - work / wall):5.2f}%")
    if not rows:
        print("no trained trials to measure")
        return
    total_wall = sum(r[1] for r in rows)
    total_work = sum(r[2] for r in rows)
    print(f"median overhead per trial: {100 * statistics.median(r[3] for r in rows):.2f}%")
    print(f"overall overhead: {100 * (1 - total_work / total_wall):.2f}% of {total_wall:.1f} s (goal < 5%)")


if __name__ == "__main__":
    main()
