"""Samplers and successive halving at equal compute (issue 15, item 4): hypervolume against CPU-seconds.

    python benchmarks/sampler_study.py --budget tiny                         # digits, minutes: checks it works
    python benchmarks/sampler_study.py --budget small --weights ORIGINAL.pt --jobs 2  # CIFAR-10 resnet32, hours
    python benchmarks/sampler_study.py --budget full --weights ORIGINAL.pt   # a longer run
    ... --write-results      # also replaces the issue-15 section of RESULTS.md and writes benchmarks/sampler_study.png

Every sampler (random, TPE, NSGA-II, GP) runs with and without successive halving (``halving:``), for
each seed, on the same space and the same original, each search in this process with one torch thread
until it has spent the budget's CPU-seconds (``time.process_time``, counted from the study's creation:
the original's trial 0, the stage features and every candidate count; data loading before it does
not). The trial running when the budget is spent is the last. CPU-seconds rather than trials, since a
halted trial costs a fraction of a full one; CPU rather than wall time, since the machine is shared.

Reported (a Markdown table on stdout, ``sampler_study.md`` and the plot ``sampler_study.html`` in the
work folder):
- hypervolume of each search's feasible completed trials (the report's: accuracy 0 and 1.1 x the
  original's MACs as reference, a fraction of the box) at 1/4, 1/3, 1/2 and all of the common compute (the
  least any search spent), mean and spread (min..max) over seeds;
- for each sampler, the compute with successive halving needs to reach the hypervolume the search
  without it reached at the common compute (the issue's goal: at most 1/3);
- Kendall tau against each plan's final accuracy on the search's validation split of what rung 0 can rank
  by: the assembled candidate's accuracy (``stage_rung: accuracy``, the default), the summed stage-wise
  distillation losses (``loss``, DNA's ranking) and, as the baseline, MACs alone; over every completed
  candidate of the searches without successive halving (which train every plan to the end). The issue
  asks for held-out accuracy; the validation split is what every trial has, and no model trains on it;
- searches with the other rung 0 found in the work folder (from an earlier ``--stage-rung``) are read
  back, never run, and added to the table as an ablation.

``--budget tiny`` runs on digits (resnet_tiny, a light stage-wise step, a tiny training budget): its
figures only show that the pipeline works. ``small`` and ``full`` run on CIFAR-10 ``resnet32`` with the
data split of ``benchmarks/cifar10_data.py`` (the search folder; held-out images unused) from the trained
original given with ``--weights``.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import optuna
import plotly.graph_objects as go
import torch
import yaml
from scipy.stats import kendalltau

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pdenas.report import build_report_data, open_study  # noqa: E402
from pdenas.search import SearchConfig, StudyLocation, TrialRecord, plan_key, search  # noqa: E402

SAMPLERS = ("random", "tpe", "nsga2", "gp")
CLOCK = "cpu.json"  # in a search's folder once it has ended: CPU-seconds at the end of each trial, and in all
FRACTIONS = ((1, 4), (1, 3), (1, 2), (1, 1))  # shares of the common compute; 1/3 is the goal for halving

TINY_SPACE = {
    "model": "resnet_tiny", "dataset": "digits", "trials": 10_000, "seed": 0, "device": "cpu",
    "space": {"stages": "all", "global_layer": [True, False], "keep": {"low": 1, "high": 3},
              "iterations": {"low": 1, "high": 3}, "dt": {"low": 0.1, "high": 0.4, "step": 0.1}},
    "budget": {"epochs": 3, "batch_size": 32, "lr": 0.05, "subset": 600, "val_fraction": 0.2},
    "stagewise": {"images": 240, "val_images": 120, "recipe": {"epochs": 1, "batch_size": 32, "precision": "fp32"}},
    "sampler": {"startup_trials": 4, "population": 6},
    "halving": {"min_images": 150, "eta": 3},
}


@dataclass(frozen=True)
class Budget:
    cpu_seconds: float  # per search
    seeds: tuple[int, ...]
    startup_trials: int
    population: int  # NSGA-II's
    min_images: int  # successive halving's first training rung
    eta: float
    subset: int | None = None  # CIFAR: training images per candidate
    epochs: int | None = None  # CIFAR: per candidate
    stage_images: int | None = None  # CIFAR: stage-wise distillation's feature images per search
    stage_epochs: int | None = None  # CIFAR: per stage variant


BUDGETS = {
    "tiny": Budget(cpu_seconds=30, seeds=(0, 1, 2), startup_trials=4, population=6, min_images=150, eta=3),
    "small": Budget(cpu_seconds=900, seeds=(0, 1, 2), startup_trials=4, population=8, min_images=1000, eta=3,
                    subset=4000, epochs=2, stage_images=2000, stage_epochs=1),
    "full": Budget(cpu_seconds=3600, seeds=(0, 1, 2), startup_trials=6, population=10, min_images=2000, eta=3,
                   subset=4000, epochs=3, stage_images=5000, stage_epochs=2),
}


class BudgetSpent(Exception):
    """The search has used its CPU-seconds (raised from its event callback, after a trial was told)."""


@dataclass
class Run:
    sampler: str
    halving: bool
    seed: int
    study_dir: Path
    ends: dict[int, float]  # trial number -> CPU-seconds when it ended (since the study was created)
    spent: float  # CPU-seconds in all
    stage_rung: str | None = None  # halving's rung 0 when it is not the one this invocation studies (an ablation)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="tiny")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default runs/sampler-study-<budget>)")
    parser.add_argument("--weights", type=Path, default=None, help="the trained original (small and full budgets)")
    parser.add_argument("--archive", type=Path, default=ROOT.parent / "shared" / "datasets" / "cifar10-train-jpeg.tar.gz")
    parser.add_argument("--samplers", default=",".join(SAMPLERS), help="comma-separated subset of " + ", ".join(SAMPLERS))
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the budget's, 3)")
    parser.add_argument("--cpu-seconds", type=float, default=None, help="CPU-seconds per search (default: the budget's)")
    parser.add_argument("--halving", default="off,on", help="off, on or off,on: the searches without and/or with successive halving")
    parser.add_argument("--stage-rung", choices=("accuracy", "loss"), default="accuracy",
                        help="successive halving's rung 0 (halving.stage_rung); each is its own set of searches")
    parser.add_argument("--write-results", action="store_true",
                        help="replace the issue-15 section of benchmarks/RESULTS.md and write benchmarks/sampler_study.png")
    parser.add_argument("--jobs", type=int, default=1, help="searches run at once, each in its own process with one "
                        "thread (default 1; 2 on a 2-core machine halves the wall time: each search's clock is its own CPU time)")
    args = parser.parse_args(argv)
    budget = BUDGETS[args.budget]
    seeds = tuple(range(args.seeds)) if args.seeds else budget.seeds
    cpu = args.cpu_seconds or budget.cpu_seconds
    samplers = [s for s in args.samplers.split(",") if s]
    work = (args.work or ROOT / "runs" / f"sampler-study-{args.budget}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    base = base_space(args, budget, work)
    one_thread()
    # seeds outermost: an interrupted study still compares every configuration on the first seeds
    modes = [{"off": False, "on": True}[m] for m in args.halving.split(",") if m]
    base["halving"]["stage_rung"] = args.stage_rung
    jobs = [(base, sampler, halving, seed, budget, cpu, work) for seed in seeds for sampler in samplers for halving in modes]
    if args.jobs > 1:
        # spawned, not forked: a forked child inherits torch's OpenMP pool in a state it cannot use
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"), initializer=one_thread) as pool:
            runs = list(pool.map(run_search, *zip(*jobs)))
    else:
        runs = [run_search(*job) for job in jobs]
    if True in modes:
        runs += cached_other_rung(work, samplers, seeds, args.stage_rung)
    text = summarise(runs, samplers, cpu, args, budget, seeds)
    (work / "sampler_study.md").write_text(text)
    plot(runs, samplers, work / "sampler_study.html")
    print(text)
    print(f"\nwrote {work / 'sampler_study.md'} and {work / 'sampler_study.html'}")
    if args.write_results:
        from results_md import RESULTS, screenshot, write_section  # benchmarks/results_md.py

        png = ROOT / "benchmarks" / "sampler_study.png"
        picture = f"\n\n![Hypervolume over CPU-seconds]({png.name})\n" if screenshot(work / "sampler_study.html", png, height=560) else ""
        write_section("sampler_study", "Samplers and successive halving on CIFAR-10 (issue 15)", text + picture)
        print(f"wrote {RESULTS} and {png}")
    return 0


def one_thread() -> None:
    """One torch thread per search, quiet Optuna (in this process and in each ``--jobs`` worker)."""
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def base_space(args: argparse.Namespace, budget: Budget, work: Path) -> dict:
    if args.budget == "tiny":
        return copy.deepcopy(TINY_SPACE)
    if args.weights is None or not args.weights.is_file():
        raise SystemExit("--weights PATH: the trained CIFAR-10 resnet32 to compress (see benchmarks/cifar10_search.py)")
    from cifar10_data import split_archive  # benchmarks/cifar10_data.py

    search_dir, _ = split_archive(args.archive, work)
    space = yaml.safe_load((ROOT / "search_spaces" / "cifar10-resnet.yaml").read_text())
    space.update(model="resnet32", dataset=str(search_dir), weights=str(args.weights.resolve()), device="cpu", trials=10_000)
    # the fine-tuning rate cifar10_search.py uses: higher rates undo what the stage-wise step reached
    # (at 0.02, two epochs on 5,000 images lost 1-11 points of it)
    space["budget"].update(subset=budget.subset, epochs=budget.epochs, lr=0.005)
    # the YAML's 10,000 feature images x 2 epochs a variant would spend most of a small search's
    # CPU-seconds before the first candidate (and 1.4 GB of features per search)
    space["stagewise"]["images"] = budget.stage_images
    space["stagewise"]["recipe"]["epochs"] = budget.stage_epochs
    space["sampler"] = {"startup_trials": budget.startup_trials, "population": budget.population}
    space["halving"] = {"min_images": budget.min_images, "eta": budget.eta}
    return space


def cached_other_rung(work: Path, samplers: list[str], seeds: tuple[int, ...], studied: str) -> list[Run]:
    """Finished searches with halving whose rung 0 is not ``studied`` (an earlier ``--stage-rung``), read back."""
    runs = []
    for rung in ("accuracy", "loss"):
        if rung == studied:
            continue
        for sampler in samplers:
            for seed in seeds:
                study_dir = work / "studies" / f"{sampler}-halving-{rung}-seed{seed}"
                if (run := finished(sampler, True, seed, study_dir, stage_rung=rung)) is not None:
                    runs.append(run)
    return runs


def finished(sampler: str, halving: bool, seed: int, study_dir: Path, *, stage_rung: str | None = None) -> Run | None:
    """The search in ``study_dir`` read back from the CPU clock it saved when it ended (None: it has not)."""
    done = study_dir / CLOCK
    if not done.is_file():
        return None
    saved = json.loads(done.read_text())
    return Run(sampler, halving, seed, study_dir, {int(k): v for k, v in saved["ends"].items()}, saved["spent"], stage_rung=stage_rung)


def run_search(base: dict, sampler: str, halving: bool, seed: int, budget: Budget, cpu: float, work: Path) -> Run:
    """One search until it has spent ``cpu`` CPU-seconds (a finished one is read back, not run again)."""
    name = f"{sampler}-halving-{base['halving']['stage_rung']}-seed{seed}" if halving else f"{sampler}-full-seed{seed}"
    study_dir = work / "studies" / name
    if (run := finished(sampler, halving, seed, study_dir)) is not None:
        return run
    if study_dir.exists():  # an interrupted search: its CPU clock is lost, start it again
        import shutil

        shutil.rmtree(study_dir)
    data = copy.deepcopy(base)
    data["seed"] = seed
    data["sampler"] = {**data["sampler"], "name": sampler}
    data["halving"] = {**data["halving"], "enabled": halving}
    config = SearchConfig.from_dict(data)
    ends: dict[int, float] = {}
    clock: dict[str, float] = {}

    def on_event(kind: str, info: dict) -> None:
        if kind == "study":
            clock["start"] = time.process_time()
        if kind in ("complete", "pruned", "fail"):
            ends[int(info["trial"])] = time.process_time() - clock["start"]
            if ends[int(info["trial"])] >= cpu:
                raise BudgetSpent

    start = time.perf_counter()
    try:
        search(config, location=StudyLocation(study_dir), on_event=on_event)
    except BudgetSpent:
        pass
    spent = max(ends.values(), default=0.0)
    (study_dir / CLOCK).write_text(json.dumps({"ends": ends, "spent": spent}))
    print(f"{name}: {len(ends)} trials, {spent:.0f} CPU-s, {time.perf_counter() - start:.0f} s wall", flush=True)
    return Run(sampler, halving, seed, study_dir, ends, spent)


@functools.lru_cache(maxsize=None)
def _history(study_dir: Path):
    """The report's hypervolume history of a finished search (None: no feasible trial)."""
    return build_report_data(open_study(study_dir), study_dir=study_dir, importances=False).hypervolume


@functools.lru_cache(maxsize=None)
def _records(study_dir: Path) -> tuple[TrialRecord, ...]:
    """A finished search's trials, read once for every table."""
    return tuple(TrialRecord.from_trial(t) for t in open_study(study_dir).get_trials(deepcopy=False))


def hypervolume_at(run: Run, cpu: float) -> float:
    """The report's hypervolume of the trials that ended within ``cpu`` CPU-seconds."""
    history = _history(run.study_dir)
    if history is None:
        return 0.0
    best = 0.0
    for number, value in zip(history.trial_numbers, history.values):
        if run.ends.get(number, math.inf) <= cpu:
            best = max(best, value)  # non-decreasing in trial number; trials end in number order in one worker
    return best


def curve(run: Run) -> tuple[list[float], list[float]]:
    """(CPU-seconds, hypervolume) after each trial that ended."""
    times = sorted(run.ends.values())
    return times, [hypervolume_at(run, t) for t in times]


def compute_to_reach(run: Run, target: float) -> float | None:
    for t, hv in zip(*curve(run)):
        if hv >= target - 1e-12:
            return t
    return None


def rung0_tau(runs: list[Run]) -> tuple[dict[str, float], int]:
    """Kendall tau against final accuracy, over the completed candidates of the searches without successive
    halving (each plan once per seed), of what rung 0 can rank by: the assembled candidate's accuracy
    (``stage_rung: accuracy``), the summed stage losses, negated (``loss``), and, the baseline a rung-0
    ranking has to beat to be worth having, the plan's MACs alone."""
    seen: dict[str, tuple[float, float, float, float]] = {}
    for run in runs:
        if run.halving:
            continue
        for record in _records(run.study_dir):
            if (not record.complete or record.reference or not record.stages or record.accuracy is None
                    or record.initial_accuracy is None or record.reused_from is not None):
                continue
            seen[f"{run.seed}:{plan_key(record.plan)}"] = (
                record.initial_accuracy, -sum(s.loss for s in record.stages.values()), float(record.macs or 0), record.accuracy)
    if len(seen) < 3:
        return {}, len(seen)
    *predictors, accuracies = zip(*seen.values())
    names = ("assembled accuracy", "summed stage losses", "MACs alone")
    return {name: float(kendalltau(values, accuracies).statistic) for name, values in zip(names, predictors)}, len(seen)


ENDINGS = ("stopped at rung 0", "stopped at rung 1", "stopped at rung 2", "stopped later", "completed")


def cost_by_ending(runs: list[Run]) -> dict[str, list[tuple[float, float]]]:
    """(wall time, of it the stage-wise step) of each candidate trial (the original's and reused plans' left
    out), by where it ended."""
    costs: dict[str, list[tuple[float, float]]] = {ending: [] for ending in ENDINGS}
    for run in runs:
        for record in _records(run.study_dir):
            if record.reference or record.reused_from is not None or record.wall_time is None:
                continue
            cost = (record.wall_time, record.stagewise_time or 0.0)
            if record.stopped_at is not None:
                costs[ENDINGS[min(record.stopped_at.rung, 3)]].append(cost)
            elif record.complete:
                costs["completed"].append(cost)
    return costs


def _shown(path: Path) -> str:
    """``path`` relative to the repository where it lies inside it (RESULTS.md is read from there)."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _stats(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{statistics.mean(values):.3f} ({min(values):.3f}..{max(values):.3f})"


def summarise(runs: list[Run], samplers: list[str], cpu: float, args, budget: Budget, seeds: tuple[int, ...]) -> str:
    ablation = [r for r in runs if r.stage_rung is not None]
    runs = [r for r in runs if r.stage_rung is None]
    common = min(run.spent for run in runs)
    lines = [
        f"Command: `python benchmarks/sampler_study.py --budget {args.budget}"
        + (f" --weights {_shown(args.weights)}" if args.weights else "") + f"`; {len(seeds)} seeds, {cpu:g} CPU-seconds a search "
        f"(one torch thread), common compute {common:.0f} CPU-s (the least any search spent). Successive halving: "
        f"min_images {budget.min_images}, eta {budget.eta:g}, rung 0 (`stage_rung: {args.stage_rung}`) "
        + ("from the assembled candidate's accuracy." if args.stage_rung == "accuracy" else "from the summed stage-wise losses."),
        "",
        "Hypervolume (fraction of the box from accuracy 0, 1.1 x the original's MACs), mean (min..max) over seeds, at a "
        "share of the common compute; trials run, of them stopped at a rung and candidates trained to the end (the "
        "only trials GP and NSGA-II learn from: Optuna's GPSampler and NSGA-II's generations read completed trials; "
        "TPE counts stopped ones among the worse):",
        "",
        "| sampler | successive halving | " + " | ".join(f"HV at {n}/{d}" if d > 1 else "HV at all" for n, d in FRACTIONS)
        + " | trials (stopped, completed) |",
        "|---|---|" + "---|" * len(FRACTIONS) + "---|",
    ]
    for sampler in samplers:
        rows = [("off", [r for r in runs if r.sampler == sampler and not r.halving]),
                ("on", [r for r in runs if r.sampler == sampler and r.halving])]
        rows += [(f"on, rung 0 `{rung}` (ablation, seed{'s' * (len(group) > 1)} {','.join(str(r.seed) for r in group)})", group)
                 for rung in sorted({r.stage_rung for r in ablation})
                 if (group := [r for r in ablation if r.sampler == sampler and r.stage_rung == rung])]
        for label, group in rows:
            if not group:
                continue
            cells = [_stats([hypervolume_at(r, n / d * common) for r in group]) for n, d in FRACTIONS]
            trials = [len(r.ends) for r in group]
            records = [_records(r.study_dir) for r in group]
            stopped = [sum(x.stopped_at is not None for x in rs) for rs in records]
            completed = [sum(x.complete and not x.reference for x in rs) for rs in records]
            lines.append(f"| {sampler} | {label} | " + " | ".join(cells)
                         + f" | {statistics.mean(trials):.1f} ({statistics.mean(stopped):.1f}, {statistics.mean(completed):.1f}) |")
    lines += ["", "Compute successive halving needed to reach the hypervolume the same sampler reached without it at the "
              "common compute (mean over seeds; goal: at most 1/3):", ""]
    for sampler in samplers:
        ratios = []
        for seed in seeds:
            full = next((r for r in runs if (r.sampler, r.halving, r.seed) == (sampler, False, seed)), None)
            half = next((r for r in runs if (r.sampler, r.halving, r.seed) == (sampler, True, seed)), None)
            if full is None or half is None:
                continue
            reached = compute_to_reach(half, hypervolume_at(full, common))
            ratios.append(math.inf if reached is None else reached / common)
        if not ratios:
            continue
        finite = [r for r in ratios if math.isfinite(r)]
        text = ", ".join("not reached" if not math.isfinite(r) else f"{r:.2f}" for r in ratios)
        lines.append(f"- {sampler}: {text}" + (f" (mean of those reached {statistics.mean(finite):.2f})" if finite else ""))
    lines += ["", "Where the compute went: candidate trials, and mean seconds a trial (its recorded wall time on one thread; "
              "in brackets the stage-wise step's share: distilling the stage variants it is the first to use, assembling, "
              "recalibrating BatchNorm), by where it ended, over every seed and sampler:", "",
              "| successive halving | " + " | ".join(ENDINGS) + " |", "|---|" + "---|" * len(ENDINGS)]
    for label, group in (("off", [r for r in runs if not r.halving]), ("on", [r for r in runs if r.halving])):
        if group:
            costs = cost_by_ending(group)
            cells = [f"{len(costs[e])}, {statistics.mean(c[0] for c in costs[e]):.1f} s ({statistics.mean(c[1] for c in costs[e]):.1f})"
                     if costs[e] else "–" for e in ENDINGS]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    taus, count = rung0_tau(runs)
    lines += ["", f"Rung 0 against final accuracy, Kendall tau over {count} completed plans of the searches without successive "
              "halving (final accuracy on the search's validation split, which neither the original nor any candidate "
              "trains on; goal: at least 0.5): " + ("; ".join(f"{name} {tau:.2f}" for name, tau in taus.items()) or "–") + "."]
    for halving in (False, True):
        spread = {s: [hypervolume_at(r, common) for r in runs if r.sampler == s and r.halving == halving] for s in samplers}
        rnd = spread.get("random")
        if not rnd:
            continue
        lines += ["", f"Against random sampling, {'with' if halving else 'without'} successive halving, at the common compute "
                  "(goal: the best model-based sampler ahead by more than the spread between seeds, the larger of the two "
                  "samplers' worst-to-best):", ""]
        for sampler in samplers:
            if sampler == "random" or not spread[sampler]:
                continue
            gap = statistics.mean(spread[sampler]) - statistics.mean(rnd)
            width = max(max(spread[sampler]) - min(spread[sampler]), max(rnd) - min(rnd))
            if len(seeds) < 2:
                lines.append(f"- {sampler}: {gap:+.3f} hypervolume (one seed: no spread to judge it by)")
                continue
            verdict = "beats it" if gap > width else "does not beat it"
            lines.append(f"- {sampler} {verdict}: {gap:+.3f} hypervolume against a spread between seeds of {width:.3f}")
    return "\n".join(lines)


def plot(runs: list[Run], samplers: list[str], path: Path) -> None:
    """Hypervolume over CPU-seconds, mean over seeds with a band from the worst to the best seed, one
    line per sampler; left without successive halving, right with it (same axes)."""
    from plotly.subplots import make_subplots

    colours = dict(zip(SAMPLERS, ("#7f7f7f", "#1f77b4", "#2ca02c", "#d62728")))
    runs = [r for r in runs if r.stage_rung is None]
    common = min(run.spent for run in runs)
    grid = [common * i / 200 for i in range(201)]
    figure = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04,
                           subplot_titles=("every trial trained to the end", "successive halving"))
    for col, halving in ((1, False), (2, True)):
        for sampler in samplers:
            group = [r for r in runs if r.sampler == sampler and r.halving == halving]
            if not group:
                continue
            values = [[hypervolume_at(r, t) for t in grid] for r in group]
            low, high = ([f(column) for column in zip(*values)] for f in (min, max))
            mean = [statistics.mean(column) for column in zip(*values)]
            colour = colours.get(sampler, "#000000")
            figure.add_trace(go.Scatter(x=grid + grid[::-1], y=high + low[::-1], fill="toself", fillcolor=colour, opacity=0.15,
                                        line={"width": 0}, hoverinfo="skip", showlegend=False), row=1, col=col)
            figure.add_trace(go.Scatter(x=grid, y=mean, mode="lines", line={"shape": "hv", "color": colour, "width": 2},
                                        name=sampler, legendgroup=sampler, showlegend=not halving,
                                        hovertemplate=f"{sampler}: %{{x:.0f}} CPU-s, mean HV %{{y:.3f}}<extra></extra>"),
                             row=1, col=col)
    figure.update_xaxes(title_text="CPU-seconds per search", range=[0, common])
    figure.update_yaxes(title_text="hypervolume (fraction of the box)", row=1, col=1)
    figure.update_layout(title=f"Hypervolume over compute: mean of {len({r.seed for r in runs})} seeds, band from the worst to the best seed",
                         template="plotly_white", height=520)
    figure.write_html(path, include_plotlyjs=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.exit(main())
