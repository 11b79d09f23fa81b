"""Where does a Global layer pay? Stage losses after the stage-wise step (issue 13, item 3).

    python benchmarks/stage_study.py                     # the committed original (benchmarks/models/resnet32-cifar10.pt)
    python benchmarks/stage_study.py --weights W.pt      # another trained resnet32 (a state dict)
    python benchmarks/stage_study.py --quick             # a few minutes: fewer features, variants and epochs

For each stage of a trained ``resnet32`` on CIFAR-10 and each number of kept blocks k = 1..m-1, the
stage is distilled on its own (``pdenas.distill``: the original's stage input -> its stage output,
block-wise distillation as in DNA / DONNA) as

* blocks only (block dropping, keep k),
* keep k + the paper's Global layer (``init: random``, y = ReLU(BN(H_K))),
* keep k + the residual form (y = f + ReLU(BN(H_K))),
* keep k + the identity-gated form (``init: identity``, y = f + a ReLU(BN(H_K)), a = 0 at the start),

and, after the first kept block, the paper and identity forms with K in {1, 2, 3} and a few dt. Each
variant's stage loss is the normalised MSE on held-out features (1.0: as good as each channel's mean)
after the step, beside the stage's honest MACs (``pdenas.profile`` of the stage alone). The summary
compares, per stage and k, what a Global layer buys (loss drop per extra MMAC) with what one more
kept block buys. Trained variants are kept in the work folder's variant store, so a rerun only trains
what is new, and the original's stage features are computed once.

Data: the CIFAR-10 ``search/`` split of ``benchmarks/cifar10_data.py`` (the original's training images;
features are drawn from its training part, losses measured on its validation part).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import pdenas
from pdenas.distill import StageModule, StageRecipe, VariantStore, assemble, make_variant, stage_features
from pdenas.nn import GlobalLayerConfig
from pdenas.surgery import CompressionPlan, compress
from pdenas.train import TrainRecipe, evaluate, recalibrate_batchnorm, resolve_device, train_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cifar10_data import ARCHIVE, MODELS, ROOT, search_data, split_archive  # noqa: E402

MODEL = "resnet32"
ORIGINAL = MODELS / f"{MODEL}-cifar10.pt"


@dataclass(frozen=True)
class Budget:
    images: int  # training feature maps per stage
    val_images: int  # held-out feature maps the losses are measured on
    scored_images: int | None  # validation images the whole candidates are scored on (None: all)
    recipe: StageRecipe
    keeps: tuple[int, ...] | None  # None: 1..m-1
    sweep_forms: tuple[str, ...]  # forms whose K and dt are swept after the first kept block
    sweep_iterations: tuple[int, ...]  # K at dt = 0.2
    sweep_dt: tuple[float, ...]  # dt at K = 1


FULL = Budget(10_000, 1_000, None, StageRecipe(epochs=2, batch_size=64, lr=1e-2), None, ("residual", "identity"), (1, 2, 3), (0.1, 0.2, 0.4))
QUICK = Budget(1_000, 250, 1_500, StageRecipe(epochs=2, batch_size=32, lr=2e-2), (1,), ("paper", "identity"), (1, 3), (0.2,))

FORMS = {  # name -> Global layer settings at K = 1, dt = 0.2 (None: blocks only)
    "blocks": None,
    "paper": {},
    "residual": {"residual": True},
    "identity": {"init": "identity"},
}


def variants(m: int, budget: Budget) -> list[tuple[int, str, GlobalLayerConfig | None]]:
    """(keep, form, config) of one stage with m blocks: every form at each studied k, blocks only at
    k + 1 too (what one more block buys), and the K / dt sweep after the first kept block."""
    keeps = [k for k in (budget.keeps or range(1, m)) if 1 <= k < m]
    rows: list[tuple[int, str, GlobalLayerConfig | None]] = []
    for keep in keeps:
        for form, settings in FORMS.items():
            rows.append((keep, form, None if settings is None else GlobalLayerConfig(iterations=1, dt=0.2, **settings)))
    rows += [(k + 1, "blocks", None) for k in keeps if k + 1 < m and k + 1 not in keeps]
    sweep = {(k, 0.2) for k in budget.sweep_iterations} | {(1, dt) for dt in budget.sweep_dt}
    for form in budget.sweep_forms:
        for k, dt in sorted(sweep - {(1, 0.2)}):
            rows.append((keeps[0], form, GlobalLayerConfig(iterations=k, dt=dt, **FORMS[form])))
    return rows


def load_original(args: argparse.Namespace, data: Any, work: Path) -> tuple[torch.nn.Module, str]:
    """The trained original and where it came from."""
    if args.weights is not None:
        model = pdenas.load_weights(pdenas.create_model(MODEL, num_classes=data.num_classes), args.weights)
        return model.eval(), f"--weights {args.weights}"
    if args.original.is_file():
        model = pdenas.load_compressed(args.original)
        held = model.pdenas_metadata.get("heldout_accuracy")
        return model.eval(), f"{args.original.name}" + (f" (held-out {held:.2%})" if held is not None else "")
    if not args.quick:
        raise SystemExit(
            f"no trained original at {args.original}: run benchmarks/pretrain_cifar10.py, pass --weights, or use --quick"
        )
    path = work / "quick-original.pt"  # a stand-in, trained once and kept: 1 epoch on 5,000 images
    if not path.is_file():
        torch.manual_seed(0)
        model = pdenas.create_model(MODEL, num_classes=data.num_classes)
        recipe = TrainRecipe(epochs=1, batch_size=128, lr=0.1, schedule="onecycle", precision="auto")
        result = train_model(model, search_data(args.search_dir, subset=5_000), recipe, seed=0, device=args.device)
        print(f"stand-in original: {result.accuracy:.2%} validation accuracy after {result.train_time:.0f} s", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.cpu().state_dict(), path)
    model = pdenas.load_weights(pdenas.create_model(MODEL, num_classes=data.num_classes), path)
    return model.eval(), "a stand-in trained 1 epoch on 5,000 images (--quick without an original)"


def stage_macs(original: torch.nn.Module, features: Any, stage: str, keep: int, config: GlobalLayerConfig | None) -> int:
    """Honest MACs per image of the stage alone (kept blocks + Global layer)."""
    plan = CompressionPlan({stage: pdenas.StagePlan(keep=keep, global_layer=config)})
    candidate = compress(original, plan, torch.zeros(1, *features.input_size))
    entry = next(e for e in features.manifest["stages"] if e["stage"]["name"] == stage)
    return pdenas.profile(StageModule(candidate, features.stage(stage)), tuple(entry["input_shape"]), device="cpu").macs


def describe(form: str, config: GlobalLayerConfig | None) -> str:
    if config is None:
        return "-"
    return f"{form} K={config.iterations} dt={config.dt:g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, default=ARCHIVE, help="CIFAR-10 ImageFolder .tar.gz (train/<class>/*.jpg)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "stage-study", help="work folder (data, features, variants)")
    parser.add_argument("--original", type=Path, default=ORIGINAL, help="the trained original (save_compressed checkpoint)")
    parser.add_argument("--weights", type=Path, default=None, help="a resnet32 state dict to use instead of --original")
    parser.add_argument("--quick", action="store_true", help="fewer features, variants and epochs (a few minutes)")
    parser.add_argument("--stages", nargs="*", default=None, help="only these stages (default: all)")
    parser.add_argument("--images", type=int, default=None, help="training feature maps per stage (overrides the budget)")
    parser.add_argument("--epochs", type=int, default=None, help="local epochs per variant (overrides the budget)")
    parser.add_argument("--keeps", type=int, nargs="*", default=None, help="kept blocks to study (overrides the budget)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is faster on a machine other jobs keep busy)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if not args.archive.is_file():
        parser.error(f"{args.archive} not found: pass --archive PATH to the CIFAR-10 training images (.tar.gz)")
    budget = QUICK if args.quick else FULL
    budget = dataclasses.replace(
        budget,
        images=args.images or budget.images,
        recipe=dataclasses.replace(budget.recipe, epochs=args.epochs or budget.recipe.epochs),
        keeps=tuple(args.keeps) if args.keeps else budget.keeps,
    )
    work = args.work.resolve() / ("quick" if args.quick else "full")
    started = time.perf_counter()
    args.search_dir, _ = split_archive(args.archive, args.work.resolve())
    data = search_data(args.search_dir)
    scored = data  # what the original and the whole candidates are scored on: (a seeded part of) the validation split
    if budget.scored_images is not None and budget.scored_images < len(data.val_y):
        pick = torch.randperm(len(data.val_y), generator=torch.Generator().manual_seed(0))[: budget.scored_images]
        scored = dataclasses.replace(data, val_x=data.val_x[pick], val_y=data.val_y[pick])
    original, source = load_original(args, data, work)
    source += f", {evaluate(original, scored, device=args.device):.2%} on {len(scored.val_y):,} validation images of the search split"
    print(f"original: {source}", flush=True)

    t = time.perf_counter()
    features = stage_features(original, data, work / "features", images=budget.images, val_images=budget.val_images,
                              device=args.device)
    feature_time = time.perf_counter() - t
    print(f"features: {features.count('train'):,} + {features.count('val'):,} images per stage, "
          f"{'computed' if features.computed else 'reused'} ({feature_time:.0f} s)", flush=True)
    store = VariantStore(work / "stages")
    rows = []
    for stage in features.stages:
        if args.stages and stage.name not in args.stages:
            continue
        full_macs = stage_macs(original, features, stage.name, stage.m, None)
        rows.append({"stage": stage.name, "keep": stage.m, "form": "original", "config": None, "macs": full_macs,
                     "loss": 0.0, "initial_loss": 0.0, "train_time": 0.0, "reused": True, "error": None, "describe": "-"})
        for keep, form, config in variants(stage.m, budget):
            variant = make_variant(stage.name, keep, config, features=features, recipe=budget.recipe)
            result = store.get_or_distill(original, variant, features, device=args.device)
            row = {"stage": stage.name, "keep": keep, "form": form, "config": config.to_dict() if config else None,
                   "macs": stage_macs(original, features, stage.name, keep, config), "loss": result.loss,
                   "initial_loss": result.initial_loss, "train_time": result.train_time, "reused": result.reused,
                   "error": result.error, "describe": describe(form, config)}
            rows.append(row)
            status = "reused" if result.reused else f"{result.train_time:.0f} s"
            print(f"{variant.describe():<58} loss {result.initial_loss:.3f} -> {result.loss:.3f}  ({status})", flush=True)
    candidates = candidate_rows(original, scored, features, store, budget, args)
    elapsed = time.perf_counter() - started
    report = markdown(rows, source=source, budget=budget, features=features, elapsed=elapsed, quick=args.quick)
    report += "\n" + "\n".join(candidate_table(candidates)) + "\n"
    print("\n" + report)
    work.mkdir(parents=True, exist_ok=True)
    (work / "stage_study.md").write_text(report)
    (work / "stage_study.json").write_text(
        json.dumps({"source": source, "rows": rows, "candidates": candidates, "seconds": elapsed}, indent=1))
    print(f"written {work / 'stage_study.md'} and stage_study.json")
    return 0


def candidate_rows(original: torch.nn.Module, data: Any, features: Any, store: VariantStore, budget: Budget,
                   args: argparse.Namespace) -> list[dict[str, Any]]:
    """Whole candidates (the same plan in every stage) scored on the validation images before any
    fine-tuning: compressed as is, and assembled from the distilled stages; BatchNorms recalibrated
    in both, so the difference is the stage-wise step alone."""
    stages = [s for s in features.stages if not args.stages or s.name in args.stages]
    plans = [(f"keep 1 + {form}" if settings is not None else "keep 1, blocks only", 1,
              None if settings is None else GlobalLayerConfig(iterations=1, dt=0.2, **settings))
             for form, settings in FORMS.items()]
    plans.append(("keep 2, blocks only", 2, None))
    device = resolve_device(args.device)
    rows = []
    for name, keep, config in plans:
        plan = CompressionPlan({s.name: pdenas.StagePlan(keep=keep, global_layer=config) for s in stages})
        torch.manual_seed(0)
        plain = compress(original, plan, torch.zeros(1, *features.input_size))
        stepped, _ = assemble(original, plan, features=features, store=store, recipe=budget.recipe, device=device)
        scores = []
        for model in (plain, stepped):
            # un-augmented, as the search scores an assembled candidate: its stages learned from features of
            # un-augmented images (pdenas/search/_candidate.py)
            recalibrate_batchnorm(model.to(device), data, batch_size=256, device=device, augment=False)
            scores.append(evaluate(model, data, device=device))
        macs = pdenas.profile(plain.cpu(), features.input_size, device="cpu").macs
        rows.append({"plan": name, "macs": macs, "accuracy": scores[0], "accuracy_stagewise": scores[1]})
        print(f"{name:<24} {macs / 1e6:6.1f} MMACs: {scores[0]:.2%} -> {scores[1]:.2%} after the stage-wise step", flush=True)
    return rows


def candidate_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "Whole candidates (the plan in every stage), validation accuracy before any fine-tuning (BatchNorms recalibrated):",
        "",
        "| plan | MMACs | compressed as is | after the stage-wise step |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['plan']} | {row['macs'] / 1e6:.1f} | {row['accuracy']:.2%} | {row['accuracy_stagewise']:.2%} |")
    return lines


def markdown(rows: list[dict[str, Any]], *, source: str, budget: Budget, features: Any, elapsed: float, quick: bool) -> str:
    r = budget.recipe
    trained = sum(1 for row in rows if row["form"] != "original" and not row["reused"])
    lines = [
        f"Stage-wise step on CIFAR-10 `resnet32`, original: {source}{' (--quick)' if quick else ''}.",
        f"Features: {features.count('train'):,} training + {features.count('val'):,} held-out images per stage; "
        f"local recipe: {r.epochs} epoch(s), batch {r.batch_size}, {r.optimizer} lr {r.lr:g} {r.schedule}, {r.precision}. "
        "Loss: MSE / Var(target) on the held-out features (1.0 = each channel's mean; 0 = the original stage). "
        f"MACs: honest MACs per image of the stage alone. {trained} variants trained in this run, "
        f"{elapsed / 60:.1f} min in all.",
        "",
        "| stage | keep | Global layer | stage MMACs | loss before step | loss after step | step s |",
        "|---|---|---|---|---|---|---|",
    ]
    order = {form: i for i, form in enumerate(FORMS)}
    for row in sorted(rows, key=lambda x: (x["stage"], x["keep"], order.get(x["form"], -1), x["describe"])):
        if row["form"] == "original":
            lines.append(f"| {row['stage']} | {row['keep']} (original) | - | {row['macs'] / 1e6:.2f} | 0 | 0 | - |")
            continue
        loss = "failed" if row["error"] else f"{row['loss']:.4f}"
        lines.append(f"| {row['stage']} | {row['keep']} | {row['describe']} | {row['macs'] / 1e6:.2f} | "
                     f"{row['initial_loss']:.4f} | {loss} | {row['train_time']:.0f} |")
    lines += ["", *summary(rows)]
    return "\n".join(lines) + "\n"


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """Per stage and keep k: the best Global layer against one more kept block, as loss drop per extra MMAC."""
    lines = [
        "What a Global layer buys against what one more kept block buys (loss drop per extra MMAC of the stage):",
        "",
        "| stage | keep k | blocks only: loss | best Global layer at k | loss | +MMACs | drop/MMAC | k+1 blocks: loss | +MMACs | drop/MMAC |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ok = [row for row in rows if not row.get("error")]
    for stage in sorted({row["stage"] for row in rows}):
        blocks = {row["keep"]: row for row in ok if row["stage"] == stage and row["config"] is None}
        for k in sorted(blocks):
            globals_ = [row for row in ok if row["stage"] == stage and row["keep"] == k and row["config"] is not None]
            if not globals_ or k + 1 not in blocks:
                continue
            base, best, more = blocks[k], min(globals_, key=lambda row: row["loss"]), blocks[k + 1]
            g_macs, b_macs = (best["macs"] - base["macs"]) / 1e6, (more["macs"] - base["macs"]) / 1e6
            lines.append(
                f"| {stage} | {k} | {base['loss']:.4f} | {best['describe']} | {best['loss']:.4f} | {g_macs:.2f} | "
                f"{(base['loss'] - best['loss']) / g_macs:.4f} | {more['loss']:.4f} | {b_macs:.2f} | "
                f"{(base['loss'] - more['loss']) / b_macs:.4f} |"
            )
    return lines


if __name__ == "__main__":
    sys.exit(main())
