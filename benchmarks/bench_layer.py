"""Benchmark: the fast Global layer against the literal reference (issue 7, Kag & Saligrama, CVPR 2022).

For each shape and K, the same ``GlobalLayer`` runs

* ``reference``: the paper's code as written: coefficient branches conv -> BN -> ReLU in NCHW and
  :func:`pdenas.nn.functional.global_pde_reference` (``torch.roll`` temporaries, per-iteration
  arithmetic), then BN and ReLU;
* ``fast``: the default path (``layer(x)``): channels-last convs, BNs folded in eval, the fused
  solver with the adjoint backward (compiled kernels when ``--compile``).

``forward`` is an inference forward (eval mode, ``torch.inference_mode``); ``forward+backward`` is a
training-mode forward and backward. Runs are interleaved (reference, fast, reference, fast, ...) in
one process and the medians compared.

    python benchmarks/bench_layer.py [--threads 2] [--reps 15] [--compile]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from pdenas.nn import GlobalLayer, GlobalLayerConfig, set_compile  # noqa: E402
from pdenas.nn.functional import global_layer_reference  # noqa: E402

SHAPES = [(128, 16, 32, 32), (128, 32, 16, 16), (128, 64, 8, 8)]
ITERATIONS = [1, 5]


class Timing(NamedTuple):
    wall: float  # median wall-clock seconds: the figure reported
    cpu: float  # median process CPU seconds: a check when the machine is shared (1 thread: ~wall when idle)


def interleaved_medians(fns: dict[str, Callable[[], object]], *, reps: int, warmup: int = 2) -> dict[str, Timing]:
    """Median wall and CPU seconds of each function, the functions run in turn ``reps`` times after warm-up."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    return {name: Timing(statistics.median(wall[name]), statistics.median(cpu[name])) for name in fns}


def environment() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (
        f"{datetime.date.today().isoformat()}, {cpu}, {os.cpu_count()} logical CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, load average {load}, "
        f"Python {platform.python_version()}"
    )


def reference_forward(layer: GlobalLayer, f: Tensor) -> Tensor:
    """The layer as the paper's public code computes it."""
    return global_layer_reference(layer, f)


def _forward(layer: GlobalLayer, x: Tensor, fn: Callable[[GlobalLayer, Tensor], Tensor]) -> Callable[[], object]:
    def run() -> None:
        layer.eval()
        with torch.inference_mode():
            fn(layer, x)

    return run


def _train_step(layer: GlobalLayer, x: Tensor, grad: Tensor, fn: Callable[[GlobalLayer, Tensor], Tensor]) -> Callable[[], object]:
    def run() -> None:
        layer.train()
        x.grad = None
        layer.zero_grad(set_to_none=True)
        fn(layer, x).backward(grad)

    return run


def bench_layer(*, reps: int, compile: bool) -> list[dict[str, object]]:
    set_compile(compile)
    fast = lambda layer, f: layer(f)  # noqa: E731
    rows = []
    for shape in SHAPES:
        for iterations in ITERATIONS:
            torch.manual_seed(0)
            layer = GlobalLayer(shape[1], GlobalLayerConfig(iterations=iterations))
            x = torch.randn(shape, requires_grad=True)
            grad = torch.randn(shape)
            row: dict[str, object] = {"shape": shape, "K": iterations}
            for mode, make in (("forward", lambda fn: _forward(layer, x, fn)),
                               ("forward+backward", lambda fn: _train_step(layer, x, grad, fn))):
                if compile:  # the first call compiles; report it, then time the compiled code
                    start = time.perf_counter()
                    make(fast)()
                    row[f"{mode} compile s"] = time.perf_counter() - start
                t = interleaved_medians({"reference": make(reference_forward), "fast": make(fast)}, reps=reps)
                row[f"{mode} reference ms"] = 1e3 * t["reference"].wall
                row[f"{mode} fast ms"] = 1e3 * t["fast"].wall
                row[f"{mode} speed-up"] = t["reference"].wall / t["fast"].wall
                row[f"{mode} cpu speed-up"] = t["reference"].cpu / t["fast"].cpu
            rows.append(row)
            _print_row(row)
    return rows


def _print_row(row: dict[str, object]) -> None:
    shape = "x".join(str(s) for s in row["shape"])  # type: ignore[union-attr]
    parts = [f"({shape}) K={row['K']}:"]
    for mode in ("forward", "forward+backward"):
        parts.append(
            f"{mode} {row[f'{mode} reference ms']:.1f} -> {row[f'{mode} fast ms']:.1f} ms "
            f"x{row[f'{mode} speed-up']:.2f} (CPU time x{row[f'{mode} cpu speed-up']:.2f})"
        )
        if f"{mode} compile s" in row:
            parts.append(f"(compiled in {row[f'{mode} compile s']:.0f} s)")
    print("  ".join(parts), flush=True)


def markdown(rows: list[dict[str, object]]) -> str:
    lines = [
        "| shape (B, C, H, W) | K | forward ref ms | forward fast ms | forward speed-up (CPU time) "
        "| fwd+bwd ref ms | fwd+bwd fast ms | fwd+bwd speed-up (CPU time) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {tuple(r['shape'])} | {r['K']} | {r['forward reference ms']:.1f} | {r['forward fast ms']:.1f} | "
            f"**{r['forward speed-up']:.2f}x** ({r['forward cpu speed-up']:.2f}x) | "
            f"{r['forward+backward reference ms']:.1f} | {r['forward+backward fast ms']:.1f} | "
            f"**{r['forward+backward speed-up']:.2f}x** ({r['forward+backward cpu speed-up']:.2f}x) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--reps", type=int, default=9, help="interleaved repetitions per variant")
    parser.add_argument("--compile", action="store_true", help="time the compiled fast path (pdenas.nn.set_compile(True))")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# Global layer: fast vs reference ({'compiled' if args.compile else 'eager'}); {environment()}", flush=True)
    rows = bench_layer(reps=args.reps, compile=args.compile)
    print(markdown(rows), flush=True)
    return rows


if __name__ == "__main__":
    main()
