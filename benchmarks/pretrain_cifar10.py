"""Train the original ``resnet32`` that the CIFAR-10 benchmarks compress (issue 13, item 6), once.

    python benchmarks/pretrain_cifar10.py                 # about an hour on 2 CPU cores (bf16 autocast)
    python benchmarks/pretrain_cifar10.py --epochs 2 --out /tmp/r32.pt    # a quick try

It trains on the training split that every CIFAR-10 search uses (the ``search/`` folder of
``cifar10_data.split_archive`` minus pdenas' own seeded 10 % validation split: 40,500 images), so the searches
score candidates on images the original never saw either, and measures the result on the 5,000 held-out
images. The recipe (``pdenas.train.TrainRecipe``): SGD with Nesterov momentum, batch 128, one-cycle learning
rate peaking at 0.2, weight decay 5e-4, random crop and flip, bfloat16 autocast where the CPU computes it
natively (``--precision``), channels-last.

Resumable: the training state is saved after every epoch in the work folder; rerunning the same command
continues from the last epoch. The model is saved with ``pdenas.save_compressed`` and the identity plan, with
its held-out accuracy, the recipe, the command and its model card (``pdenas.export.ModelCard``: input size,
channel order, mean, std, class names) in its metadata, and is recorded in ``benchmarks/models/MANIFEST.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

import pdenas
from pdenas.export import ModelCard, Preprocessing
from pdenas.train import TrainRecipe, evaluate, train_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cifar10_data import ARCHIVE, MODELS, ROOT, holdout_view, record_model, search_data, sha256, split_archive  # noqa: E402

MODEL = "resnet32"


def recipe(epochs: int, precision: str) -> TrainRecipe:
    return TrainRecipe(
        epochs=epochs, batch_size=128, optimizer="sgd", lr=0.2, momentum=0.9, weight_decay=5e-4, schedule="onecycle",
        warmup_epochs=0, val_fraction=0.1, augment=True, precision=precision, channels_last=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, default=ARCHIVE, help="CIFAR-10 ImageFolder .tar.gz (train/<class>/*.jpg)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-cifar10", help="work folder (data, training state)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=MODELS / f"{MODEL}-cifar10.pt")
    args = parser.parse_args(argv)
    if not args.archive.is_file():
        parser.error(f"{args.archive} not found: pass --archive PATH to the CIFAR-10 training images (.tar.gz)")
    work = args.work.resolve()
    search_dir, holdout_dir = split_archive(args.archive, work)
    data = search_data(search_dir)
    torch.manual_seed(0)
    model = pdenas.create_model(MODEL, num_classes=data.num_classes)
    how = recipe(args.epochs, args.precision)
    state = work / f"{MODEL}-pretrain-{args.epochs}ep-{args.precision}.state.pt"
    started = time.time()

    def report(epoch: int, epochs: int, loss: float) -> None:
        print(f"epoch {epoch}/{epochs}: loss {loss:.4f} ({(time.time() - started) / 60:.1f} min)", flush=True)

    result = train_model(model, data, how, seed=0, device=args.device, on_epoch=report, checkpoint=state)
    model.cpu().eval()
    held = evaluate(model, holdout_view(search_dir, holdout_dir), device="cpu")
    print(f"validation accuracy {result.accuracy:.2%} ({len(data.val_y):,} images), held-out accuracy {held:.2%} "
          f"(5,000 images); {result.precision}, {result.train_time / 60:.1f} min in this run "
          f"(resumed after epoch {result.resumed_from})")

    example = torch.zeros(2, *data.input_size)
    plan = pdenas.CompressionPlan.identity(pdenas.find_stages(model, example))
    cost = pdenas.profile(model, data.input_size)
    command = "python benchmarks/pretrain_cifar10.py" + "".join(
        f" {flag} {value}" for flag, value in (("--epochs", args.epochs), ("--precision", args.precision)))
    metadata = {
        "heldout_accuracy": held,
        "val_accuracy": result.accuracy,
        "train_images": int(data.train_y.numel()),
        "recipe": how.to_dict(),
        "precision_used": result.precision,
        "command": command,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        # how to feed the model (input size, channel order, scale, mean, std), its classes, cost and accuracy,
        # as pdenas export writes it: what pdenas evaluate and load_exported read
        "model_card": ModelCard(
            classes=tuple(data.classes), preprocessing=Preprocessing.from_data(data), model=MODEL, cost=cost,
            dataset="CIFAR-10 (benchmarks/cifar10_data.py search split)", accuracy=result.accuracy,
        ).to_dict(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pdenas.save_compressed(args.out, model, plan=plan, model_spec=MODEL, input_size=data.input_size,
                           num_classes=data.num_classes, metadata=metadata)
    print(f"saved {args.out}")
    if args.out.resolve().parent == MODELS.resolve():
        record_model({
            "file": args.out.name, "original": True, "sha256": sha256(args.out), "plan": plan.describe(),
            "macs": cost.macs, "conv_macs": cost.conv_macs, "params": cost.params, "heldout_accuracy": held,
            "command": command,
        })
        print(f"recorded in {MODELS / 'MANIFEST.json'}")
    (work / f"{MODEL}-pretrain.json").write_text(json.dumps({**metadata, "train_time_s": result.train_time}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
