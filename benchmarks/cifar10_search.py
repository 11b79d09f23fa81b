"""CIFAR-10 search benchmark (issue 8): what the Pareto front buys, against the obvious alternatives.

One command, as a user would run pdenas (the CLI for searches, reports and exports; the public API
for pre-training the original model and for the held-out evaluation):

    python benchmarks/cifar10_search.py --budget small   # < 15 min on 2 CPU cores, for development
    python benchmarks/cifar10_search.py --budget full    # the run whose results go into RESULTS.md

Data: the 50,000 CIFAR-10 training JPEGs in ``../shared/datasets/cifar10-train-jpeg.tar.gz``
(``--archive``). Every 10th image of each class (by file name) goes to a *held-out* folder that no
search, selection or training ever sees; the other 45,000 form the *search* folder, of which pdenas
carves its own seeded validation split (10 %) to score candidates. Every accuracy this benchmark
reports as final is measured on the held-out images, so nothing is tuned on the data it reports.

Steps (each is cached in ``--work``, default ``runs/bench-cifar10-<budget>``; rerunning resumes):

1. Train ``resnet32`` once on the search folder's training split (public API: ``load_dataset``,
   ``create_model``, ``train_model``) and save its weights.
2. Q1: ``pdenas search`` with ``search_spaces/cifar10-resnet.yaml`` (model, trials, subset, epochs and
   TPE's random start adapted to the budget, written next to the study) from those weights.
3. Q2: the same search with Global layers switched off (``global_layer: [false]``: only ``keep`` is
   searched, i.e. plain block dropping).
4. Q3: TPE against random sampling, equal trials and seeds, hypervolume against one reference point
   (accuracy 0, 1.1 x the original's MACs; ``pdenas.report.build_report_data``).
5. Retrain every Pareto candidate of the two searches of step 2 and 3 and the original with one equal,
   longer budget (``pdenas export --epochs E``: the search's budget + E epochs) and evaluate each on the
   held-out images; Q1's table and Q2's comparison at 2x, 3x and 4x fewer MACs use those accuracies.

The results are printed as Markdown and written to ``WORK/results.md``; ``--write-results`` also
replaces the issue-8 section of ``benchmarks/RESULTS.md`` and saves the Global search's report page
(Pareto plot first) as ``benchmarks/cifar10_pareto.png`` with headless Chromium.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

import pdenas
from pdenas.data import load_dataset
from pdenas.report import build_report_data, open_study
from pdenas.search import SearchConfig
from pdenas.train import evaluate, train_model

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "cifar10-resnet.yaml"
ARCHIVE = ROOT.parent / "shared" / "datasets" / "cifar10-train-jpeg.tar.gz"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
PNG = ROOT / "benchmarks" / "cifar10_pareto.png"
BEGIN, END = "<!-- cifar10_search:begin -->", "<!-- cifar10_search:end -->"
TARGETS = (2.0, 3.0, 4.0)  # "x fewer MACs than the original" at which Q2 compares the fronts
MODEL = "resnet32"  # 5 blocks a stage: keep 1 (+ Global) reaches 4-5x fewer MACs, as in the paper


@dataclass(frozen=True)
class Budget:
    """Everything the two budgets differ in."""

    pretrain_subset: int | None  # images of the search folder's training split used to train the original
    pretrain_epochs: int
    trials: int  # per search, the original (trial 0) included
    startup_trials: int  # TPE's random start
    subset: int  # training images per candidate
    epochs: int  # per candidate
    retrain_epochs: int  # extra epochs of the equal, longer budget (after the search's own)
    max_retrain: int  # Pareto candidates retrained per front (evenly spread over MACs), besides the original
    seeds: tuple[int, ...]  # seeds of the TPE-vs-random comparison
    lr: float = 0.05  # candidates start from trained weights: half the YAML's from-scratch 0.1


BUDGETS = {
    "small": Budget(pretrain_subset=5000, pretrain_epochs=3, trials=6, startup_trials=3, subset=1000, epochs=1,
                    retrain_epochs=1, max_retrain=2, seeds=(0,)),
    "full": Budget(pretrain_subset=20000, pretrain_epochs=6, trials=16, startup_trials=6, subset=4000, epochs=2,
                   retrain_epochs=3, max_retrain=5, seeds=(0, 1, 2)),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    parser.add_argument("--archive", type=Path, default=ARCHIVE, help="CIFAR-10 ImageFolder .tar.gz (train/<class>/*.jpg)")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default runs/bench-cifar10-<budget>)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds of the TPE-vs-random comparison (default: the budget's)")
    parser.add_argument("--write-results", action="store_true", help="update benchmarks/RESULTS.md and the PNG")
    args = parser.parse_args(argv)
    budget = BUDGETS[args.budget]
    if args.seeds is not None:
        budget = dataclasses.replace(budget, seeds=tuple(range(args.seeds)))
    if not args.archive.is_file():
        parser.error(f"{args.archive} not found: pass --archive PATH to the CIFAR-10 training images (.tar.gz)")
    work = (args.work or ROOT / "runs" / f"bench-cifar10-{args.budget}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    clock = Clock(work / "phases.json")

    search_dir, holdout_dir = clock.run("data", lambda: split_archive(args.archive, work))
    weights = clock.run("pre-train the original", lambda: pretrain(search_dir, holdout_dir, work, budget))
    studies: dict[str, Path] = {}
    for seed in budget.seeds:
        for name, changes in variants(seed).items():
            if seed != budget.seeds[0] and name == "no-global":
                continue  # block dropping is compared at the first seed only
            key = f"{name}-seed{seed}"
            studies[key] = clock.run(f"search {key}", functools.partial(run_search, key, changes, seed, search_dir, weights, work, budget))
    first = budget.seeds[0]
    retrained = clock.run("retrain", lambda: retrain_fronts(
        {"global": studies[f"global-seed{first}"], "no-global": studies[f"no-global-seed{first}"]}, search_dir, holdout_dir, work, budget))
    text = results_markdown(args, budget, studies, retrained, clock, work)
    (work / "results.md").write_text(text)
    print(text)
    if args.write_results:
        write_results(text)
        screenshot(studies[f"global-seed{first}"] / "report.html", PNG)
        print(f"wrote {RESULTS} and {PNG}")
    return 0


class Clock:
    """Wall time of each phase, printed as it goes and kept in ``WORK/phases.json``, so that a resumed run
    adds to what the interrupted one spent (a cached step then costs about nothing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.phases: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}

    def run(self, name: str, step):
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            return step()
        finally:
            spent = time.perf_counter() - start
            self.phases[name] = self.phases.get(name, 0.0) + spent
            self.path.write_text(json.dumps(self.phases, indent=1))
            print(f"== {name}: {spent:.0f} s ({self.phases[name]:.0f} s in all runs)", flush=True)

    @property
    def total(self) -> float:
        return sum(self.phases.values())


# ---------------------------------------------------------------------------------------------- data
def split_archive(archive: Path, work: Path) -> tuple[Path, Path]:
    """Unpack once; hard-link every 10th image of each class into holdout/, the rest into search/."""
    search, holdout = work / "data" / "search", work / "data" / "holdout"
    done = work / "data" / "split.json"
    if done.is_file():
        return search, holdout
    raw = work / "data" / "raw"
    shutil.rmtree(work / "data", ignore_errors=True)
    raw.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(raw, filter="data")
    classes = [d for d in sorted(raw.rglob("*")) if d.is_dir() and any(f.suffix.lower() == ".jpg" for f in d.iterdir())]
    counts = {}
    for folder in classes:
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() == ".jpg")
        for index, file in enumerate(files):
            target = (holdout if index % 10 == 0 else search) / folder.name / file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(file, target)
        counts[folder.name] = len(files)
    done.write_text(json.dumps({"archive": str(archive), "per_class": counts, "holdout": "every 10th file by name"}))
    return search, holdout


def holdout_view(search_dir: Path, holdout_dir: Path, *, subset: int | None):
    """The search folder's data (its normalisation) with the held-out images as the validation split."""
    data = load_dataset(search_dir, seed=0, val_fraction=0.1, subset=subset)
    held = load_dataset(holdout_dir, seed=0, val_fraction=0.0)
    return dataclasses.replace(data, val_x=held.train_x, val_y=held.train_y)


# ------------------------------------------------------------------------------------------ original
def pretrain(search_dir: Path, holdout_dir: Path, work: Path, budget: Budget) -> Path:
    path = work / f"{MODEL}-pretrained.pt"
    info = work / f"{MODEL}-pretrained.json"
    if path.is_file() and info.is_file():
        return path
    space = SearchConfig.from_yaml(SPACE)
    train_budget = dataclasses.replace(space.budget, epochs=budget.pretrain_epochs)
    data = load_dataset(search_dir, seed=0, val_fraction=space.budget.val_fraction, subset=budget.pretrain_subset)
    torch.manual_seed(0)
    model = pdenas.create_model(MODEL, num_classes=data.num_classes)
    result = train_model(model, data, train_budget, seed=0, device="cpu",
                         on_epoch=lambda e, n, loss: print(f"  pre-train epoch {e}/{n} loss {loss:.3f}", flush=True))
    torch.save(model.state_dict(), path)
    held = evaluate(model, holdout_view(search_dir, holdout_dir, subset=budget.pretrain_subset), device="cpu")
    info.write_text(json.dumps({"val_accuracy": result.accuracy, "holdout_accuracy": held, "train_time": result.train_time,
                                "train_images": int(data.train_y.numel()), "epochs": budget.pretrain_epochs}))
    return path


# -------------------------------------------------------------------------------------------- search
def variants(seed: int) -> dict[str, dict]:
    """Search-space changes of each compared search (on top of cifar10-resnet.yaml)."""
    return {
        "global": {},
        "no-global": {"space": {"global_layer": [False]}},
        "random": {"sampler": {"name": "random"}},
    }


def run_search(key: str, changes: dict, seed: int, search_dir: Path, weights: Path, work: Path, budget: Budget) -> Path:
    study_dir = work / "studies" / key
    config = work / "spaces" / f"{key}.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    space = yaml.safe_load(SPACE.read_text())
    space["model"] = MODEL
    space["sampler"]["startup_trials"] = budget.startup_trials
    space["budget"]["lr"] = budget.lr
    for section, values in changes.items():
        space[section].update(values)
    config.write_text(f"# {SPACE.name}, adapted by benchmarks/cifar10_search.py\n" + yaml.safe_dump(space, sort_keys=False))
    pdenas_cli("search", "--config", config, "--weights", weights, "--dataset", search_dir, "--trials", budget.trials,
               "--epochs", budget.epochs, "--subset", budget.subset, "--seed", seed, "--device", "cpu",
               "--study-dir", study_dir)
    return study_dir


def pdenas_cli(*args: object) -> None:
    command = [sys.executable, "-m", "pdenas.cli", *map(str, args)]
    print("  $ pdenas " + " ".join(map(str, args)), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL if os.environ.get("BENCH_QUIET") else None)


# ------------------------------------------------------------------------------------------- retrain
@dataclass(frozen=True)
class Retrained:
    front: str
    study: str  # its study folder's name
    trial: int
    plan: str
    search_accuracy: float  # on the search's validation split, after the search's budget
    holdout_accuracy: float  # after the equal, longer budget
    macs: float
    params: float
    latency_ms: float | None  # CPU, batch 1, measured side by side after all retraining
    original: bool


def retrain_fronts(studies: dict[str, Path], search_dir: Path, holdout_dir: Path, work: Path, budget: Budget) -> list[Retrained]:
    out: list[Retrained] = []
    done_original = False
    for front, study_dir in studies.items():
        data = build_report_data(open_study(study_dir), study_dir=study_dir, importances=False)
        chosen = spread([t for t in data.pareto if not t.reference], budget.max_retrain)
        if not done_original and data.original.trial_number is not None:
            chosen = [data.trial(data.original.trial_number), *chosen]
            done_original = True
        for trial in chosen:
            out.append(retrain_one(front, study_dir, trial, search_dir, holdout_dir, work, budget))
    return measure_latency(out, work)


def measure_latency(rows: list[Retrained], work: Path, *, rounds: int = 5) -> list[Retrained]:
    """CPU latency at batch 1 of every retrained model, measured here side by side: ``rounds`` interleaved
    rounds (each ``pdenas.latency``: median of 20 after warm-up), median over the rounds."""
    models = [pdenas.load_compressed(work / "retrain" / f"{r.study}-trial{r.trial}" / "model.pt") for r in rows]
    times: list[list[float]] = [[] for _ in rows]
    for _ in range(rounds):
        for model, samples in zip(models, times):
            samples.append(1e3 * pdenas.latency(model, (3, 32, 32), batch_size=1, device="cpu"))
    return [dataclasses.replace(r, latency_ms=sorted(t)[len(t) // 2]) for r, t in zip(rows, times)]


def spread(trials: list, count: int) -> list:
    """At most ``count`` of ``trials`` (sorted by MACs), evenly spaced, the cheapest and the best included."""
    if len(trials) <= count:
        return trials
    picks = sorted({round(i * (len(trials) - 1) / (count - 1)) for i in range(count)})
    return [trials[i] for i in picks]


def retrain_one(front: str, study_dir: Path, trial, search_dir: Path, holdout_dir: Path, work: Path, budget: Budget) -> Retrained:
    out = work / "retrain" / f"{study_dir.name}-trial{trial.number}"
    record = out / "result.json"
    if not record.is_file():
        pdenas_cli("export", study_dir, "--trial", trial.number, "--epochs", budget.retrain_epochs, "--out", out / "model.pt",
                   "--device", "cpu")
        model = pdenas.load_compressed(out / "model.pt")  # carries pdenas_metadata: the export's figures
        held = evaluate(model, holdout_view(search_dir, holdout_dir, subset=budget.subset), device="cpu")
        record.write_text(json.dumps({"holdout_accuracy": held, "export_val_accuracy": model.pdenas_metadata.get("accuracy")}))
    saved = json.loads(record.read_text())
    return Retrained(front=front, study=study_dir.name, trial=trial.number, plan=trial.plan_text, search_accuracy=trial.accuracy,
                     holdout_accuracy=saved["holdout_accuracy"], macs=trial.macs, params=trial.params,
                     latency_ms=None, original=trial.reference)


# ------------------------------------------------------------------------------------------- results
def accuracy_at(points: list[tuple[float, float]], macs: float) -> tuple[float | None, float | None]:
    """(best accuracy among the points with MACs <= ``macs``, the front's accuracy interpolated linearly in
    log MACs between its neighbouring points); None where the front has no point that cheap."""
    front = sorted(points)
    within = [a for m, a in front if m <= macs * (1 + 1e-9)]
    if not within:
        return None, None
    best = max(within)
    staircase: list[tuple[float, float]] = []  # non-dominated, ascending in both
    for m, a in front:
        if not staircase or a > staircase[-1][1]:
            staircase.append((m, a))
    below = [p for p in staircase if p[0] <= macs]
    above = [p for p in staircase if p[0] > macs]
    if not above:
        return best, below[-1][1]
    (m0, a0), (m1, a1) = below[-1], above[0]
    w = (math.log(macs) - math.log(m0)) / (math.log(m1) - math.log(m0))
    return best, a0 + w * (a1 - a0)


def results_markdown(args, budget: Budget, studies: dict[str, Path], retrained: list[Retrained], clock: Clock,
                     work: Path) -> str:
    pre = json.loads((work / f"{MODEL}-pretrained.json").read_text())
    original = next(r for r in retrained if r.original)
    lines = [
        (f"Measured {dt.date.today().isoformat()} on {platform.node() or 'this machine'} ({os.cpu_count()} CPU cores, "
         f"torch {torch.__version__}, {torch.get_num_threads()} threads, pdenas {pdenas.__version__}); wall time "
         f"{clock.total / 60:.1f} min (the sum of the phases below, over every run of the command that built them)."),
        "",
        f"Command: `python benchmarks/cifar10_search.py --budget {args.budget}`"
        + (f" `--seeds {args.seeds}`" if args.seeds is not None else "") + ".",
        "",
        (f"Budget `{args.budget}`: original `{MODEL}` trained {budget.pretrain_epochs} epochs on "
         f"{pre['train_images']:,} images (held-out accuracy {pre['holdout_accuracy']:.2%}); each search "
         f"{budget.trials} trials (TPE: {budget.startup_trials} random first), each candidate {budget.epochs} epochs "
         f"on {budget.subset:,} images from the original's weights (SGD, lr {budget.lr:g}, cosine), scored on the search's validation split "
         f"(4,500 images); retraining: the search's budget + {budget.retrain_epochs} epochs, scored on the "
         f"5,000 held-out images no search saw."),
        "",
        "Phases: " + ", ".join(f"{name} {sec / 60:.1f} min" for name, sec in clock.phases.items()) + ".",
        "",
        "### 1. Pareto candidates of the Global-layer search, retrained",
        "",
        "| trial | plan | search acc | held-out acc | MACs | fewer MACs | params | fewer params | CPU latency (ms, batch 1) | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted((r for r in retrained if r.front == "global"), key=lambda r: -r.macs):
        lines.append(
            f"| {r.trial}{' (original)' if r.original else ''} | {r.plan} | {r.search_accuracy:.2%} | {r.holdout_accuracy:.2%} "
            f"| {r.macs / 1e6:.2f}M | {original.macs / r.macs:.2f}x | {r.params:,.0f} | {original.params / r.params:.2f}x "
            f"| {fmt(r.latency_ms)} | {ratio(original.latency_ms, r.latency_ms)} |"
        )
    lines += ["", "### 2. Global layers against dropping blocks alone (held-out accuracy after retraining)", "",
              "| fewer MACs than the original | Global: best within | Global: interpolated | blocks only: best within | blocks only: interpolated |",
              "|---|---|---|---|---|"]
    fronts = {name: [(r.macs, r.holdout_accuracy) for r in retrained if r.front == name or r.original] for name in ("global", "no-global")}
    for target in TARGETS:
        cells = []
        for name in ("global", "no-global"):
            best, interp = accuracy_at(fronts[name], original.macs / target)
            cells += [pct(best), pct(interp)]
        lines.append(f"| {target:g}x (<= {original.macs / target / 1e6:.2f}M) | " + " | ".join(cells) + " |")
    lines += ["", "Block-dropping candidates retrained:", "",
              "| trial | plan | search acc | held-out acc | MACs | fewer MACs | params |", "|---|---|---|---|---|---|---|"]
    for r in sorted((r for r in retrained if r.front == "no-global"), key=lambda r: -r.macs):
        lines.append(f"| {r.trial} | {r.plan} | {r.search_accuracy:.2%} | {r.holdout_accuracy:.2%} | {r.macs / 1e6:.2f}M "
                     f"| {original.macs / r.macs:.2f}x | {r.params:,.0f} |")
    lines += ["", "### 3. TPE against random sampling (hypervolume of the search's front)", ""]
    hv: dict[str, list[float]] = {"global": [], "random": []}
    reference = None
    rows = []
    for seed in budget.seeds:
        cells = []
        for name in ("global", "random"):
            study_dir = studies[f"{name}-seed{seed}"]
            data = build_report_data(open_study(study_dir), study_dir=study_dir, importances=False)
            value = data.hypervolume.final if data.hypervolume else float("nan")
            reference = data.hypervolume.reference_point if data.hypervolume else reference
            hv[name].append(value)
            cells.append(f"{value:.4f}")
        rows.append(f"| {seed} | " + " | ".join(cells) + " |")
    lines += [(f"Reference point: accuracy 0, MACs {reference['macs'] / 1e6:.2f}M (1.1 x the original's); the value is the "
               "dominated fraction of the box between it and (accuracy 1, 0 MACs). Same trials, seeds and budget for both "
               f"samplers; {len(budget.seeds)} seed(s)."), "", "| seed | TPE | random |", "|---|---|---|", *rows,
              f"| mean | {mean(hv['global']):.4f} | {mean(hv['random']):.4f} |", ""]
    return "\n".join(lines) + "\n"


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b <= 0 else f"{a / b:.2f}x"


def pct(value: float | None) -> str:
    return "no point that cheap" if value is None else f"{value:.2%}"


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def write_results(text: str) -> None:
    current = RESULTS.read_text() if RESULTS.is_file() else "# Benchmark results\n"
    section = f"{BEGIN}\n## CIFAR-10 search (issue 8)\n\n{text}{END}"
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        current = head + section + rest.split(END, 1)[1]
    else:
        current = current.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(current)


def screenshot(html: Path, png: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        print("no Chromium on PATH: the PNG was not written")
        return
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1080",
                    "--virtual-time-budget=5000", f"--screenshot={png}", html.resolve().as_uri()],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    sys.exit(main())
