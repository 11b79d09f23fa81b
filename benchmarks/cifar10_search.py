"""CIFAR-10 benchmark (issue 13, item 8): what pdenas finds from a trained ``resnet32``, against dropping
blocks alone and against structured channel pruning, all on held-out images after equal retraining.

    python benchmarks/cifar10_search.py --budget small   # < 15 min on 2 CPU cores, for development
    python benchmarks/cifar10_search.py --budget full    # the run whose results go into RESULTS.md

It starts from the committed original, ``benchmarks/models/resnet32-cifar10.pt`` (made by
``benchmarks/pretrain_cifar10.py``), on the data split of ``cifar10_data.py`` (45,000 search images, of which
pdenas keeps 10 % to score candidates, and 5,000 held-out images that no search, selection or training sees).
Steps, each cached in ``--work`` (default ``runs/bench-cifar10-<budget>``; rerunning resumes):

1. **Global search**: ``pdenas search`` with ``search_spaces/cifar10-resnet.yaml`` (trials, images and epochs
   adapted to the budget, written next to the study) from the original's weights; the paper's plan (keep 1
   block + a Global layer K=1, dt=0.2 in every stage) is enqueued as a fixed trial.
2. **Blocks-only search**: the same with ``global_layer: [false]`` (the same stage-wise distillation and teacher).
3. **Torch-Pruning** (``cifar10_peers.py``): the original pruned to each conv-MAC target, fine-tuned with the
   same budget and teacher.
4. **Ablation** (public API, fixed plans): for Global layers and for blocks only, at each MAC target (2x, 3x
   and the paper's 4.6x fewer conv MACs: the plan of each family with the most conv MACs within the target),
   fine-tuning alone from the random (paper) init, from the identity init, then + stage-wise distillation,
   then + the original as teacher.
5. **Retraining and measurement**: every Pareto model of both searches and every Torch-Pruning model gets
   the search's budget, then the deployment retraining a user gives the model they ship: D more epochs on
   all 40,500 training images (``pdenas export --epochs D --subset all``: fresh schedule, the original as
   teacher). The ablation's fixed plans get the search's budget + R epochs on the search's images (its rows
   compare treatments, not models to ship). Then each model's held-out accuracy and its ONNX Runtime
   latency (batch 1, 2 threads, interleaved rounds, medians) side by side with the original's.

Results are printed as Markdown and written to ``WORK/results.md``; ``--write-results`` also replaces the
issue-13 section of ``benchmarks/RESULTS.md``, saves the Global search's report page as
``benchmarks/cifar10_pareto.png`` (headless Chromium), and copies the retrained Pareto models of the Global
search into ``benchmarks/models/`` (recorded in ``MANIFEST.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import optuna
import torch
import yaml

import pdenas
from pdenas.cost import measure_latency
from pdenas.nn import GlobalLayerConfig
from pdenas.report import build_report_data, open_study, stage_view
from pdenas.search import SearchConfig, StudyLocation, StudyRecord, TrialRecord, build_context, train_candidate, training_images
from pdenas.surgery import CompressionPlan, StagePlan
from pdenas.train import evaluate, train_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cifar10_data import (ARCHIVE, MODELS, ROOT, forget_compressed_models, holdout_view, record_model,  # noqa: E402
                          search_data, sha256, split_archive)
from cifar10_peers import prune_to_conv_macs  # noqa: E402
from results_md import RESULTS, screenshot, write_section  # noqa: E402

SPACE = ROOT / "search_spaces" / "cifar10-resnet.yaml"
ORIGINAL = MODELS / "resnet32-cifar10.pt"
PNG = ROOT / "benchmarks" / "cifar10_pareto.png"
MODEL = "resnet32"
PAPER = GlobalLayerConfig(iterations=1, dt=0.2)  # the paper's layer (Kag & Saligrama, Sec. 4.1)
INPUT = (3, 32, 32)


@dataclass(frozen=True)
class Budget:
    """Everything the budgets differ in."""

    trials: int  # per search, the original (trial 0) and the paper's plan included
    startup_trials: int  # TPE's random start
    subset: int  # training images per candidate (of the 40,500 of the search split)
    epochs: int  # fine-tuning epochs per candidate (the search's budget)
    retrain_epochs: int  # R: the ablation's extra epochs, on the search's images
    deploy_epochs: int  # D: the fronts' and Torch-Pruning's extra epochs, on all training images
    stage_images: int  # stage-wise distillation: feature images per study
    stage_epochs: int
    max_retrain: int  # Pareto models retrained per search, evenly spread over MACs
    targets: tuple[float, ...]  # x fewer conv MACs of the ablation and the comparisons
    lr: float = 0.005  # fine-tuning an assembled candidate: at 0.02 two epochs on 5,000 images lost 1-11 points of what the stage-wise step had reached


BUDGETS = {
    "tiny": Budget(trials=3, startup_trials=2, subset=300, epochs=1, retrain_epochs=1, deploy_epochs=1, stage_images=200,
                   stage_epochs=1, max_retrain=1, targets=(4.6,)),  # a smoke test of the whole pipeline (figures mean nothing)
    # no extra retraining epoch: with one, the small run took 16.6 min (the 14 ablation rows 10.9 of them)
    "small": Budget(trials=4, startup_trials=2, subset=1500, epochs=1, retrain_epochs=0, deploy_epochs=0, stage_images=1000,
                    stage_epochs=1, max_retrain=2, targets=(2.0, 4.6)),
    # deploy_epochs 3: 1-2 min an epoch per model on 2 cores (Torch-Pruning 4.6x: 75 s), ten models
    "full": Budget(trials=10, startup_trials=5, subset=5000, epochs=2, retrain_epochs=2, deploy_epochs=3, stage_images=5000,
                   stage_epochs=2, max_retrain=3, targets=(2.0, 3.0, 4.6)),
}
ABLATION = (  # (row, Global init, stage-wise distillation, teacher)
    ("fine-tune only, random init", "random", False, False),
    ("fine-tune only, identity init", "identity", False, False),
    ("+ stage-wise distillation", None, True, False),  # None: the init that won the two rows above
    ("+ teacher fine-tuning", None, True, True),
)
DISTILLATION = 0.7  # the teacher's weight (search_spaces/cifar10-resnet.yaml)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    parser.add_argument("--archive", type=Path, default=ARCHIVE, help="CIFAR-10 ImageFolder .tar.gz (train/<class>/*.jpg)")
    parser.add_argument("--original", type=Path, default=ORIGINAL, help="the trained original (save_compressed identity plan)")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default runs/bench-cifar10-<budget>)")
    parser.add_argument("--write-results", action="store_true", help="update RESULTS.md, the PNG and benchmarks/models/")
    args = parser.parse_args(argv)
    budget = BUDGETS[args.budget]
    if not args.archive.is_file():
        parser.error(f"{args.archive} not found: pass --archive PATH to the CIFAR-10 training images (.tar.gz)")
    if not args.original.is_file():
        parser.error(f"{args.original} not found: train it with python benchmarks/pretrain_cifar10.py (or pass --original)")
    work = (args.work or ROOT / "runs" / f"bench-cifar10-{args.budget}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    clock = Clock(work / "phases.json")
    bench = Bench(args, budget, work)

    bench.search_dir, bench.holdout_dir = clock.run("data", lambda: split_archive(args.archive, ROOT / "runs" / "bench-cifar10"))
    studies = {
        "global": clock.run("search: Global layers", lambda: bench.search("global", {}, enqueue_paper=True)),
        "blocks": clock.run("search: blocks only", lambda: bench.search("blocks", {"space": {"global_layer": [False]}})),
    }
    rows = clock.run("retrain the Pareto models", lambda: [r for name, d in studies.items() for r in bench.retrain_front(name, d)])
    rows += clock.run("Torch-Pruning", bench.peers)  # before the ablation: the comparison a user acts on comes first
    rows += clock.run("ablation", bench.ablation)
    rows = clock.run("latency", lambda: measure_all(rows, work))
    text = results_markdown(bench, studies, rows, clock)
    (work / "results.md").write_text(text)
    print(text)
    if args.write_results:
        write_section("cifar10_search", "CIFAR-10: compressing a trained resnet32 (issue 13)", text)
        screenshot(studies["global"] / "report.html", PNG)
        commit_models(rows, work)
        print(f"wrote {RESULTS}, {PNG} and {MODELS}")
    return 0


class Clock:
    """Wall time of each phase, printed as it goes and kept in ``WORK/phases.json``, so that a resumed run
    adds to what the interrupted one spent (a cached step then costs about nothing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.phases: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}

    def run(self, name: str, step: Callable[[], Any]) -> Any:
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


@dataclass(frozen=True)
class Row:
    """One retrained, measured model."""

    group: str  # "global" / "blocks" (a search's Pareto model), "ablation", "torch-pruning", "original"
    name: str  # what it is, in words
    file: str  # its model.pt (or .pt of the whole module for a pruned model), relative to the work folder
    plan: str
    macs: int
    conv_macs: int
    params: int
    search_accuracy: float | None  # on the search's validation split, after the search's budget
    heldout_accuracy: float  # after its retraining (deployment, or the ablation's)
    target: float | None = None  # x fewer conv MACs aimed at (ablation, peers)
    family: str | None = None  # "global" / "blocks" (ablation)
    latency_ms: float | None = None  # ONNX Runtime, batch 1, 2 threads


class Bench:
    def __init__(self, args: argparse.Namespace, budget: Budget, work: Path) -> None:
        self.args, self.budget, self.work = args, budget, work
        self.search_dir = self.holdout_dir = Path()
        self._original: Any = None
        self._ctx: Any = None
        self._heldout: Any = None

    # ------------------------------------------------------------------------------------ searches
    def space(self, changes: dict[str, dict]) -> dict[str, Any]:
        space = yaml.safe_load(SPACE.read_text())
        b = self.budget
        space.update(model=MODEL, trials=b.trials, seed=0, device="cpu")
        space["sampler"]["startup_trials"] = b.startup_trials
        space["stagewise"]["images"] = b.stage_images
        space["stagewise"]["recipe"]["epochs"] = b.stage_epochs
        space["budget"].update(epochs=b.epochs, subset=b.subset, lr=b.lr, precision="auto", distillation=DISTILLATION)
        for section, values in changes.items():
            space[section].update(values)
        return space

    def search(self, name: str, changes: dict[str, dict], *, enqueue_paper: bool = False) -> Path:
        study_dir = self.work / "studies" / name
        config = self.work / "spaces" / f"{name}.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f"# {SPACE.name}, adapted by benchmarks/cifar10_search.py\n"
                          + yaml.safe_dump(self.space(changes), sort_keys=False))
        common = ("--config", config, "--weights", self.args.original, "--dataset", self.search_dir, "--study-dir", study_dir)
        if enqueue_paper and not (study_dir / "paper-enqueued").is_file():
            pdenas_cli("search", *common, "--trials", 1)  # trial 0: the original, scored as it is
            enqueue_paper_plan(study_dir)
            (study_dir / "paper-enqueued").touch()
        pdenas_cli("search", *common)
        return study_dir

    def retrain_front(self, name: str, study_dir: Path) -> list[Row]:
        data = build_report_data(open_study(study_dir), study_dir=study_dir, importances=False)
        front = [t for t in data.pareto if not t.reference]
        chosen = spread(front, self.budget.max_retrain)
        # and the front's most accurate plan within each MAC target, so that the comparison at equal MACs
        # compares the best each search found there (spread alone skipped a 3.1x Global model)
        original_conv = data.original.conv_macs
        for target in self.budget.targets:
            within = [t for t in front if t.conv_macs <= original_conv / target and t.accuracy is not None]
            best = max(within, key=lambda t: t.accuracy, default=None)
            if best is not None and best not in chosen:
                chosen.append(best)
        paper_text = self.paper_plan_text()
        paper = [t for t in data.trials if t.plan_text == paper_text and t not in chosen]
        rows = []
        for trial in [*chosen, *paper[:1]]:
            out = self.work / "retrain" / f"{name}-trial{trial.number}"
            if not (out / "result.json").is_file():
                deploy = ("--epochs", self.budget.deploy_epochs, "--subset", "all") if self.budget.deploy_epochs else ()
                pdenas_cli("export", study_dir, "--trial", trial.number, *deploy, "--out", out / "model.pt", "--device", "cpu")
                model = pdenas.load_compressed(out / "model.pt")
                (out / "result.json").write_text(json.dumps({"heldout_accuracy": self.heldout(model)}))
            saved = json.loads((out / "result.json").read_text())
            label = "the paper's plan" if trial.plan_text == paper_text else f"trial {trial.number}"
            rows.append(Row(name, label, str((out / "model.pt").relative_to(self.work)), trial.plan_text, int(trial.macs),
                            int(trial.conv_macs), int(trial.params), trial.accuracy, saved["heldout_accuracy"]))
        if name == "global":
            original = self.original()
            cost = pdenas.profile(original, INPUT)
            rows.append(Row("original", f"{MODEL} (committed)", str(self.args.original), "original", cost.macs, cost.conv_macs,
                            cost.params, data.original.accuracy, self.heldout(original)))
        return rows

    def paper_plan_text(self) -> str:
        stages = pdenas.find_stages(self.original(), torch.zeros(2, *INPUT))
        return CompressionPlan({s.name: StagePlan(1, PAPER) for s in stages}).describe(stages)

    # ------------------------------------------------------------------------------------ ablation
    def ablation(self) -> list[Row]:
        rows: list[Row] = []
        winner = None
        for row_name, init, stagewise, teacher in ABLATION:
            if init is None:
                winner = winner or self._init_winner(rows)
                init = winner
            for family in ("global", "blocks"):
                for target in self.budget.targets:
                    if family == "blocks" and "identity" in row_name:
                        continue  # no Global layer, nothing to initialise: the random-init row is the same run
                    label = f"{row_name} [{family}, {target:g}x]" + (f" ({init} init)" if family == "global" and "+" in row_name else "")
                    rows.append(self._ablation_row(label, family, target, init, stagewise, teacher))
        return rows

    def _init_winner(self, rows: list[Row]) -> str:
        """The Global init with the higher mean held-out accuracy over the targets (fine-tuning alone)."""
        score = {init: [r.heldout_accuracy for r in rows if r.family == "global" and f"{init} init" in r.name] for init in ("random", "identity")}
        return max(score, key=lambda init: sum(score[init]) / max(len(score[init]), 1))

    def _ablation_row(self, label: str, family: str, target: float, init: str, stagewise: bool, teacher: bool) -> Row:
        key = f"{family}-{target:g}x-{init if family == 'global' else 'none'}-sw{int(stagewise)}-t{int(teacher)}"
        out = self.work / "ablation" / key
        if not (out / "result.json").is_file():
            ctx = self._context(stagewise=stagewise, teacher=teacher)
            plan = self._plan_at(ctx, family, target, init)
            print(f"  {label}: {plan.describe(ctx.stages)}", flush=True)
            trained = train_candidate(ctx, plan)
            model = self._retrain(trained.model, ctx)
            out.mkdir(parents=True, exist_ok=True)
            pdenas.save_compressed(out / "model.pt", model, plan=plan, model_spec=MODEL, input_size=INPUT, num_classes=10)
            cost = pdenas.profile(model, INPUT)
            (out / "result.json").write_text(json.dumps({
                "plan": plan.describe(ctx.stages), "macs": cost.macs, "conv_macs": cost.conv_macs, "params": cost.params,
                "search_accuracy": trained.result.accuracy, "initial_accuracy": trained.initial_accuracy,
                "heldout_accuracy": self.heldout(model),
            }))
        r = json.loads((out / "result.json").read_text())
        return Row("ablation", label, str((out / "model.pt").relative_to(self.work)), r["plan"], r["macs"], r["conv_macs"],
                   r["params"], r["search_accuracy"], r["heldout_accuracy"], target=target, family=family)

    def _context(self, *, stagewise: bool, teacher: bool):
        """The search's context (data loaded once), its configuration switched to the row's treatment."""
        space = self.space({})
        space.update(weights=str(self.args.original), dataset=str(self.search_dir))
        space["stagewise"]["enabled"] = stagewise
        space["budget"]["distillation"] = DISTILLATION if teacher else 0.0
        config = SearchConfig.from_dict(space)
        if self._ctx is None:  # stage features and variants shared by every row
            self._ctx = build_context(config, location=StudyLocation(self.work / "ablation" / "shared"))
        return dataclasses.replace(self._ctx, config=config)

    def _plan_at(self, ctx: Any, family: str, target: float, init: str) -> CompressionPlan:
        """The plan of ``family`` with the most conv MACs within original / ``target`` (kept blocks per stage from
        1 to m; with a Global layer of the paper's settings in every changed stage for ``global``)."""
        limit = ctx.original.conv_macs / target
        layer = dataclasses.replace(PAPER, init=init)
        best: tuple[int, CompressionPlan] | None = None
        for keeps in _grid([s.m for s in ctx.stages]):
            plan = CompressionPlan({
                s.name: StagePlan(k, layer if family == "global" and k < s.m else None) for s, k in zip(ctx.stages, keeps)
            })
            conv = pdenas.profile(pdenas.compress(ctx.base_model, plan, ctx.example_input()), INPUT).conv_macs
            if conv <= limit and (best is None or conv > best[0]):
                best = (conv, plan)
        if best is None:
            raise SystemExit(f"no {family} plan reaches {target:g}x fewer conv MACs")
        return best[1]

    def _retrain(self, model: torch.nn.Module, ctx: Any, *, deploy: bool = False) -> torch.nn.Module:
        """More epochs with a fresh schedule, as ``pdenas export --epochs`` gives them: the ablation's
        ``retrain_epochs`` on the search's images, or (``deploy``) ``deploy_epochs`` on all of them (``--subset all``)."""
        budget = ctx.config.budget
        epochs = self.budget.deploy_epochs if deploy else self.budget.retrain_epochs
        if epochs == 0:
            return model.cpu().eval()
        data = training_images(ctx, None) if deploy else ctx.data
        teacher = ctx.base_model if budget.distillation > 0 else None
        train_model(model, data, budget, seed=ctx.config.seed + budget.epochs, device="cpu", teacher=teacher, epochs=epochs)
        return model.cpu().eval()

    # ---------------------------------------------------------------------------------------- peer
    def peers(self) -> list[Row]:
        rows = []
        for target in self.budget.targets:
            out = self.work / "peers" / f"torch-pruning-{target:g}x"
            if not (out / "result.json").is_file():
                ctx = self._context(stagewise=False, teacher=True)
                pruned = prune_to_conv_macs(self.original(), INPUT, ctx.original.conv_macs / target)
                model = pruned.model
                first = train_model(model, ctx.data, ctx.config.budget, seed=ctx.config.seed, device="cpu", teacher=ctx.base_model)
                model = self._retrain(model, ctx, deploy=True)
                out.mkdir(parents=True, exist_ok=True)
                torch.save(model, out / "model.pt")
                (out / "result.json").write_text(json.dumps({
                    "plan": f"channel ratio {pruned.ratio:.3f}", "macs": pruned.macs, "conv_macs": pruned.conv_macs,
                    "params": pruned.params, "search_accuracy": first.accuracy, "heldout_accuracy": self.heldout(model),
                }))
            r = json.loads((out / "result.json").read_text())
            rows.append(Row("torch-pruning", f"Torch-Pruning {target:g}x", str((out / "model.pt").relative_to(self.work)), r["plan"],
                            r["macs"], r["conv_macs"], r["params"], r["search_accuracy"], r["heldout_accuracy"], target=target))
        return rows

    # --------------------------------------------------------------------------------------- shared
    @property
    def train_images(self) -> int:
        """Training images of the search split (what ``--subset all`` trains on)."""
        return len(search_data(self.search_dir).train_y)

    def original(self) -> torch.nn.Module:
        if self._original is None:
            self._original = pdenas.load_compressed(self.args.original).eval()
        return self._original

    def heldout(self, model: torch.nn.Module) -> float:
        if self._heldout is None:  # normalised as the original was trained (its card), as the searches feed it
            pre = self.original().pdenas_metadata["model_card"]["preprocessing"]
            view = holdout_view(self.search_dir, self.holdout_dir, subset=self.budget.subset)
            self._heldout = dataclasses.replace(view, mean=tuple(pre["mean"]), std=tuple(pre["std"]))
        return evaluate(model, self._heldout, device="cpu")


def _grid(blocks: list[int]) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = [()]
    for m in blocks:
        out = [(*prefix, k) for prefix in out for k in range(1, m + 1)]
    return out


def enqueue_paper_plan(study_dir: Path) -> None:
    """Queue the paper's plan (keep 1 + Global K=1, dt=0.2, the paper's layer, in every stage) as a fixed trial,
    in the parameters pdenas' sampler uses (``<stage>.keep``, ``<stage>.global``, ...)."""
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(study_dir / "study.log")))
    study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
    params = {}
    for stage in ("layer1", "layer2", "layer3"):
        params.update({f"{stage}.keep": 1, f"{stage}.global": True, f"{stage}.iterations": PAPER.iterations,
                       f"{stage}.dt": PAPER.dt, f"{stage}.diffusion": PAPER.diffusion, f"{stage}.init": "random",
                       f"{stage}.residual": False})
    study.enqueue_trial(params, skip_if_exists=True)


def pdenas_cli(*args: object) -> None:
    command = [sys.executable, "-m", "pdenas.cli", *map(str, args)]
    print("  $ pdenas " + " ".join(map(str, args)), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL if os.environ.get("BENCH_QUIET") else None)


def spread(trials: list, count: int) -> list:
    """At most ``count`` of ``trials`` (sorted by MACs), evenly spaced, the cheapest and the best included."""
    if len(trials) <= count:
        return trials
    if count < 2:
        return trials[-count:] if count else []
    picks = sorted({round(i * (len(trials) - 1) / (count - 1)) for i in range(count)})
    return [trials[i] for i in picks]


def load_row_model(row: Row, work: Path) -> torch.nn.Module:
    path = Path(row.file) if Path(row.file).is_absolute() else work / row.file
    if row.group == "torch-pruning":
        return torch.load(path, weights_only=False).eval()
    return pdenas.load_compressed(path).eval()


def measure_all(rows: list[Row], work: Path, *, rounds: int = 5) -> list[Row]:
    """ONNX Runtime latency at batch 1 with 2 threads of every model, measured side by side: ``rounds``
    interleaved rounds, the median over the rounds of each round's median."""
    models = [load_row_model(r, work) for r in rows]
    times: list[list[float]] = [[] for _ in rows]
    for _ in range(rounds):
        for model, samples in zip(models, times):
            samples.append(measure_latency(model, INPUT, runtime="onnxruntime", batch_size=1, threads=2, device="cpu").median_ms)
    return [dataclasses.replace(r, latency_ms=sorted(t)[len(t) // 2]) for r, t in zip(rows, times)]


# ------------------------------------------------------------------------------------------- results
def most_accurate(rows: Iterable[Row]) -> Row | None:
    return max(rows, key=lambda r: r.heldout_accuracy, default=None)


def best_within(rows: list[Row], conv_macs: float) -> Row | None:
    return most_accurate(r for r in rows if r.conv_macs <= conv_macs * 1.01)


def latency_table(rows: list[Row]) -> list[str]:
    """Each Torch-Pruning model against the most accurate model of each search's front that runs at least as
    fast in ONNX Runtime (batch 1): what a user who deploys for speed, not for MACs, would compare."""
    peers = [r for r in rows if r.group == "torch-pruning" and r.latency_ms is not None]
    if not peers:
        return []
    out = ["", "### The same, at equal ONNX Runtime latency (batch 1, 2 threads)", "",
           "For each Torch-Pruning model, the most accurate model of each search's front that runs at least as fast "
           "(held-out accuracy, ms per image, fewer conv MACs).", "",
           "| Torch-Pruning | Global layers, as fast or faster | blocks only, as fast or faster |", "|---|---|---|"]
    for peer in sorted(peers, key=lambda r: -r.latency_ms):
        cells = [f"{peer.name}: {peer.heldout_accuracy:.2%}, {peer.latency_ms:.2f} ms"]
        for group in ("global", "blocks"):
            best = most_accurate(r for r in rows if r.group == group and r.latency_ms is not None
                                 and r.latency_ms <= peer.latency_ms)
            cells.append("none as fast" if best is None else
                         f"{best.heldout_accuracy:.2%}, {best.latency_ms:.2f} ms ({best.name})")
        out.append("| " + " | ".join(cells) + " |")
    original = next((r for r in rows if r.group == "original" and r.latency_ms is not None), None)
    if original is not None:
        out += ["", f"The original: {original.heldout_accuracy:.2%}, {original.latency_ms:.2f} ms."]
    return out


def results_markdown(bench: Bench, studies: dict[str, Path], rows: list[Row], clock: Clock) -> str:
    b, args = bench.budget, bench.args
    original = next(r for r in rows if r.group == "original")
    card = pdenas.load_compressed(args.original).pdenas_metadata
    lines = [
        (f"Measured {dt.date.today().isoformat()} on {platform.node() or 'this machine'} ({os.cpu_count()} CPU cores, "
         f"torch {torch.__version__}, {torch.get_num_threads()} threads, pdenas {pdenas.__version__}); wall time "
         f"{clock.total / 60:.1f} min, the sum of the phases (over every run of the command that built them): "
         + ", ".join(f"{name} {sec / 60:.1f} min" for name, sec in clock.phases.items()) + "."),
        "",
        f"Command: `python benchmarks/cifar10_search.py --budget {args.budget}`.",
        "",
        (f"Original: `{MODEL}` from `{args.original.name}` (`{card.get('command', '?')}`), held-out accuracy "
         f"{original.heldout_accuracy:.2%} on the 5,000 held-out images. Each search: {b.trials} trials (TPE, "
         f"{b.startup_trials} random first), stage-wise distillation on {b.stage_images:,} feature images "
         f"({b.stage_epochs} epoch(s) per variant), each candidate fine-tuned {b.epochs} epoch(s) on {b.subset:,} images "
         f"(SGD lr {b.lr:g}, cosine, the original as teacher at weight {DISTILLATION}). " + retraining_words(b, bench.train_images)
         + " Every model is scored on the held-out images. Latency: ONNX Runtime, batch 1, 2 threads, 5 interleaved "
         "rounds, medians."),
        "",
        "### Pareto models of the Global-layer search (and the paper's plan), retrained",
        "",
        *row_table([r for r in rows if r.group in ("original", "global")], original),
        "",
        "### Pareto models of the blocks-only search, retrained",
        "",
        *row_table([r for r in rows if r.group == "blocks"], original),
        "",
        "### Global layers against blocks only against Torch-Pruning, at equal conv MACs (held-out accuracy)",
        "",
        "Best model within each target after the deployment retraining (the search fronts; Torch-Pruning pruned to the "
        "target). The ablation below has its own, shorter retraining and is not mixed in.",
        "",
        "| fewer conv MACs | Global layers | blocks only | Torch-Pruning |",
        "|---|---|---|---|",
    ]
    for target in b.targets:
        limit = original.conv_macs / target
        cells = []
        for pick in (
            [r for r in rows if r.group == "global"],
            [r for r in rows if r.group == "blocks"],
            [r for r in rows if r.group == "torch-pruning" and r.target == target],
        ):
            best = best_within(pick, limit * (1.01 if pick and pick[0].group == "torch-pruning" else 1.0))
            cells.append("none that cheap" if best is None else
                         f"{best.heldout_accuracy:.2%} ({original.conv_macs / best.conv_macs:.2f}x, {best.name})")
        lines.append(f"| {target:g}x (<= {limit / 1e6:.2f}M) | " + " | ".join(cells) + " |")
    lines += latency_table(rows)
    lines += ["", f"### Ablation (fixed plans, each retrained {b.retrain_epochs} epoch(s) on the search's images)", "",
              "| row | family | target | plan | conv MACs | fewer | accuracy after the search's budget (val) | held-out |",
              "|---|---|---|---|---|---|---|---|"]
    for r in (r for r in rows if r.group == "ablation"):
        lines.append(f"| {r.name.split(' [')[0]} | {r.family} | {r.target:g}x | {r.plan} | {r.conv_macs / 1e6:.2f}M "
                     f"| {original.conv_macs / r.conv_macs:.2f}x | {pct(r.search_accuracy)} | {r.heldout_accuracy:.2%} |")
    lines += ["", "### Torch-Pruning (DepGraph, group L2 magnitude), fine-tuned with the same budget, teacher and deployment retraining", "",
              *row_table([r for r in rows if r.group == "torch-pruning"], original), "",
              "### Where a Global layer pays, per stage (the stage-wise records of both searches)", ""]
    view = stage_view([TrialRecord.from_trial(t) for d in studies.values() for t in open_study(d).get_trials(deepcopy=False)],
                      StudyRecord.from_study(open_study(studies["global"])).original)
    lines += [f"- {c.stage}, keep {c.keep}: {c.verdict}" for c in view.choices] or [f"- {view.reason}"]
    return "\n".join(lines) + "\n"


def retraining_words(b: Budget, train_images: int) -> str:
    if b.deploy_epochs:
        deploy = (f"The searches' Pareto models and Torch-Pruning's then get {b.deploy_epochs} more epoch(s) on all "
                  f"{train_images:,} training images (fresh schedule, the original as teacher: `pdenas export --epochs "
                  f"{b.deploy_epochs} --subset all`, what a user gives the model they ship)")
    else:
        deploy = "The searches' Pareto models and Torch-Pruning's get no further training in this budget"
    ablation = f"{b.retrain_epochs} more on the search's {b.subset:,} images" if b.retrain_epochs else "no further training"
    return f"{deploy}; the ablation's fixed plans get {ablation}."


def row_table(rows: list[Row], original: Row) -> list[str]:
    out = ["| model | plan | val acc (search) | held-out acc | conv MACs | fewer conv MACs | params | ORT ms (b1) | speed-up | speed-up / MAC ratio |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r.conv_macs):
        mac_ratio = original.conv_macs / r.conv_macs
        speed = original.latency_ms / r.latency_ms if r.latency_ms and original.latency_ms else None
        out.append(f"| {r.name} | {r.plan} | {pct(r.search_accuracy)} | {r.heldout_accuracy:.2%} | {r.conv_macs / 1e6:.2f}M "
                   f"| {mac_ratio:.2f}x | {r.params:,} | {fmt(r.latency_ms)} | {fmt(speed, 'x')} "
                   f"| {fmt(speed / mac_ratio if speed else None)} |")
    return out


def fmt(value: float | None, suffix: str = "") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}{suffix}"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def commit_models(rows: list[Row], work: Path) -> None:
    """Copy the Global search's retrained Pareto models into benchmarks/models/ and record them, in place of
    the models an earlier run put there."""
    forget_compressed_models()
    for r in rows:
        if r.group != "global":
            continue
        name = f"resnet32-cifar10-global-{r.name.replace(' ', '-').replace(chr(39), '')}.pt"
        shutil.copyfile(work / r.file, MODELS / name)
        record_model({"file": name, "original": False, "sha256": sha256(MODELS / name), "plan": r.plan, "macs": r.macs,
                      "conv_macs": r.conv_macs, "params": r.params, "heldout_accuracy": r.heldout_accuracy,
                      "latency_ms_ort_b1": r.latency_ms})


if __name__ == "__main__":
    sys.exit(main())
