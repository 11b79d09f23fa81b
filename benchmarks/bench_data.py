"""How fast the data layer is, and whether it could ever be the bottleneck of the search's training.

Prints:
  1. the decode time of the CIFAR-10 JPEG archive (50,000 images) into uint8 tensors, first time
     (fresh cache folder) and from the disk cache in a fresh process-like state;
  2. images/s of ``ImageData.train_batches`` (batch 128, augmentation on) over a whole epoch;
  3. images/s of training zoo ``resnet_tiny`` (forward + backward + SGD step, batch 128) on batches
     already made, and the ratio loader/training (above 1: the loader is not the bottleneck);
  4. images/s of the two together, as the search runs them.

    python benchmarks/bench_data.py [--archive PATH] [--steps 30] [--threads N]

Without the archive (the default is the shared copy next to the repository) it measures digits.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch
from torch import nn

from pdenas.data import Batches, ImageData, clear_memo, load_dataset
from pdenas.zoo import create_model

DEFAULT_ARCHIVE = ROOT / ".." / "shared" / "datasets" / "cifar10-train-jpeg.tar.gz"
BATCH = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="ImageFolder .tar.gz to decode")
    parser.add_argument("--steps", type=int, default=30, help="timed resnet_tiny training steps")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}")

    with tempfile.TemporaryDirectory(prefix="pdenas-bench-") as cache:
        if args.archive.is_file():
            data = _decode(args.archive.resolve(), cache)
        else:
            print(f"{args.archive} not found: measuring digits instead")
            data = load_dataset("digits")
        loader_ips = _loader(data)
        train_ips = _training(data, args.steps)
        print(f"ratio loader / training: {loader_ips / train_ips:.1f}x "
              f"({'the loader is not the bottleneck' if loader_ips > train_ips else 'THE LOADER IS THE BOTTLENECK'})")
        _together(data, args.steps)


def _decode(archive: Path, cache: str) -> ImageData:
    start, cpu = time.perf_counter(), time.process_time()
    data = load_dataset(str(archive), cache_dir=cache)
    first, first_cpu = time.perf_counter() - start, time.process_time() - cpu
    n = data.train_x.shape[0] + data.val_x.shape[0]
    print(f"decode {archive.name}: {n} images in {first:.2f} s ({n / first:,.0f} images/s; "
          f"{first_cpu:.2f} CPU-s), first time")
    clear_memo()  # as a new process would
    start, cpu = time.perf_counter(), time.process_time()
    data = load_dataset(str(archive), cache_dir=cache)
    cached, cached_cpu = time.perf_counter() - start, time.process_time() - cpu
    assert data.from_cache
    print(f"load {archive.name} from the disk cache: {cached:.2f} s ({cached_cpu:.2f} CPU-s; split and "
          "statistics included)")
    return data


def _loader(data: ImageData) -> float:
    batches = data.train_batches(BATCH, seed=0, augment=True)
    next(iter(batches))  # warm-up
    start = time.perf_counter()
    cpu = time.process_time()
    n = sum(labels.numel() for _, labels in batches)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"train_batches (augmented, one epoch of {n}): {n / wall:,.0f} images/s, "
          f"{n / cpu:,.0f} images per CPU-second ({cpu / wall:.1f} cores busy)")
    return n / wall


def _forever(batches: Batches) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches across as many epochs as asked for (digits has only a dozen batches an epoch)."""
    while True:
        yield from batches


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()


def _model(data: ImageData) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = create_model("resnet_tiny", num_classes=data.num_classes, in_channels=data.input_size[0]).train()
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)


def _training(data: ImageData, steps: int) -> float:
    model, optimizer = _model(data)
    made = [batch for batch, _ in zip(_forever(data.train_batches(BATCH, seed=1, drop_last=True)), range(steps + 3))]
    for images, labels in made[:3]:  # warm-up
        _step(model, optimizer, images, labels)
    start, cpu = time.perf_counter(), time.process_time()
    for images, labels in made[3:]:
        _step(model, optimizer, images, labels)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    ips = BATCH * (len(made) - 3) / wall
    print(f"resnet_tiny training step (forward + backward + SGD): {ips:,.0f} images/s, "
          f"{BATCH * (len(made) - 3) / cpu:,.0f} images per CPU-second ({cpu / wall:.1f} cores busy)")
    return ips


def _together(data: ImageData, steps: int) -> None:
    model, optimizer = _model(data)
    batches = _forever(data.train_batches(BATCH, seed=2, drop_last=True))
    for _ in range(3):
        _step(model, optimizer, *next(batches))
    start = time.perf_counter()
    for _ in range(steps):
        _step(model, optimizer, *next(batches))
    wall = time.perf_counter() - start
    print(f"loader + training together: {BATCH * steps / wall:,.0f} images/s")


if __name__ == "__main__":
    main()
