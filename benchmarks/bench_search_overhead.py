"""Search overhead: the share of a trial's wall time not spent training and evaluating the candidate
(model building, stage finding, profiling, storage writes, the sampler).

    python benchmarks/bench_search_overhead.py                 # runs the default search into benchmarks/work/
    python benchmarks/bench_search_overhead.py --study-dir runs/default   # measures an existing study
    python benchmarks/bench_search_overhead.py --latency onnxruntime      # the default search measuring latency there

Per trial, wall time is Optuna's own record (datetime_start to datetime_complete, storage included);
training and evaluation times are what the trial recorded. Goal: overhead under 5% of trial time.
With ``--latency RUNTIME`` the default search also measures each candidate's latency in RUNTIME
(``measure_latency: true``), and the share of each trial spent measuring it (``latency_time``: writing
the file, loading it, timing) is printed too.
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
import yaml
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pdenas.search import StudyLocation, open_storage, read_config  # noqa: E402
from pdenas.search import TrialRecord  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study-dir", type=Path)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--latency", choices=["torch", "torchscript", "onnxruntime", "aoti"],
                        help="also measure each candidate's latency in this runtime")
    args = parser.parse_args()
    directory = args.study_dir
    if directory is None:
        work = ROOT / "benchmarks" / "work"
        directory = work / ("search-overhead" + (f"-{args.latency}" if args.latency else ""))
        command = [sys.executable, "-m", "pdenas.cli", "search", "--study-dir", str(directory), "--trials", str(args.trials)]
        if args.latency:
            config = yaml.safe_load((ROOT / "search_spaces" / "default.yaml").read_text())
            config.update(measure_latency=True, latency={"runtime": args.latency, "batch_size": 1, "threads": None})
            work.mkdir(parents=True, exist_ok=True)
            (work / f"latency-{args.latency}.yaml").write_text(yaml.safe_dump(config))
            command += ["--config", str(work / f"latency-{args.latency}.yaml")]
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    config = read_config(directory)
    study = optuna.load_study(
        study_name=config["study_name"], storage=open_storage(StudyLocation(directory, config.get("storage"), config["study_name"]))
    )
    print(f"# search overhead, {datetime.date.today()}, {platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}")
    rows = []
    latency_shares = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = TrialRecord.from_trial(t)
        if record.train_time is None or record.reused_from is not None or t.datetime_complete is None:
            continue  # reused or untrained trials have no training to compare with
        wall = (t.datetime_complete - t.datetime_start).total_seconds()
        work = record.train_time + (record.eval_time or 0.0)
        rows.append((t.number, wall, work, 1 - work / wall))
        measured = ""
        if record.latency_time is not None:
            latency_shares.append((record.latency_time, wall))
            measured = (f", latency in {record.latency_runtime} {record.latency_ms:.3f} ms, measuring it "
                        f"{record.latency_time:.2f} s ({100 * record.latency_time / wall:.2f}%)")
        print(f"trial {t.number:3d}: wall {wall:7.2f} s, train+eval {work:7.2f} s, overhead {100 * (1 - work / wall):5.2f}%{measured}")
    if not rows:
        print("no trained trials to measure")
        return
    total_wall = sum(r[1] for r in rows)
    total_work = sum(r[2] for r in rows)
    print(f"median overhead per trial: {100 * statistics.median(r[3] for r in rows):.2f}%")
    print(f"overall overhead: {100 * (1 - total_work / total_wall):.2f}% of {total_wall:.1f} s (goal < 5%)")
    if latency_shares:
        print(f"measuring latency: median {statistics.median(s for s, _ in latency_shares):.2f} s per trial, "
              f"{100 * sum(s for s, _ in latency_shares) / sum(w for _, w in latency_shares):.2f}% of the trials' wall time")


if __name__ == "__main__":
    main()
