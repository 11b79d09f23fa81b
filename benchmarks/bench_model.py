"""Benchmark: ``resnet32_global`` against ``resnet32`` in images/s (issue 7; Kag & Saligrama, CVPR 2022,
Table 1: 4.6x fewer MACs).

Three models run interleaved in one process at batch 128, 3x32x32:

* ``resnet32``: the baseline ResNet (no Global layer; pdenas does not change it);
* ``resnet32_global (reference)``: the same Global model with the literal Global layer of the
  paper's code (what the issue measured: about 1.05x);
* ``resnet32_global``: the default fast path (``--compile``: with ``pdenas.nn.set_compile(True)``).

Inference is an eval-mode forward under ``torch.inference_mode``; training is one SGD step
(forward, cross-entropy, backward, update). Peak training memory of ``resnet32_global`` at K = 1
and K = 5 is the growth of the peak resident set size (``ru_maxrss``) over a few training steps,
each in a fresh subprocess.

    python benchmarks/bench_model.py [--threads 2] [--reps 9] [--compile] [--no-memory]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from bench_layer import environment, interleaved_medians, reference_forward  # noqa: E402
from pdenas.nn import GlobalLayer, set_compile  # noqa: E402
from pdenas.zoo import create_model  # noqa: E402

BATCH = 128


class _ReferenceGlobal(nn.Module):
    """Runs a GlobalLayer's parameters through the literal reference forward."""

    def __init__(self, layer: GlobalLayer) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return reference_forward(self.layer, f)


def with_reference_layers(model: nn.Module) -> nn.Module:
    """``model`` with every GlobalLayer replaced by the literal reference (parameters shared)."""
    for name, child in model.named_children():
        if isinstance(child, GlobalLayer):
            setattr(model, name, _ReferenceGlobal(child))
        else:
            with_reference_layers(child)
    return model


def _inference(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> None:
        model.eval()
        with torch.inference_mode():
            model(x)

    return run


def _training(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], object]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def run() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    return run


def bench_model(*, reps: int, compile: bool, iterations: int = 1) -> dict[str, dict[str, float]]:
    set_compile(compile)
    torch.manual_seed(0)
    x = torch.randn(BATCH, 3, 32, 32)
    y = torch.randint(0, 10, (BATCH,))
    models = {
        "resnet32": create_model("resnet32"),
        "resnet32_global (reference)": with_reference_layers(create_model("resnet32_global", iterations=iterations)),
        "resnet32_global": create_model("resnet32_global", iterations=iterations),
    }
    results: dict[str, dict[str, float]] = {}
    for mode, make in (("inference", lambda m: _inference(m, x)), ("training", lambda m: _training(m, x, y))):
        fns = {name: make(model) for name, model in models.items()}
        if compile:
            start = time.perf_counter()
            fns["resnet32_global"]()
            print(f"  compiling resnet32_global for {mode}: {time.perf_counter() - start:.0f} s", flush=True)
        t = interleaved_medians(fns, reps=reps)
        results[mode] = {name: BATCH / seconds for name, seconds in t.items()}
        base = results[mode]["resnet32"]
        print(
            f"{mode}: " + ", ".join(f"{name} {ips:.0f} img/s (x{ips / base:.2f})" for name, ips in results[mode].items()),
            flush=True,
        )
    return results


def peak_training_memory(iterations: int, *, compile: bool, threads: int | None, reference: bool = False) -> float:
    """MiB by which the peak RSS grows over 3 training steps of resnet32_global, in a fresh process."""
    cmd = [sys.executable, __file__, "--memory-child", str(iterations)]
    if compile:
        cmd.append("--compile")
    if reference:
        cmd.append("--reference")
    if threads:
        cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def _memory_child(iterations: int, *, reference: bool) -> None:
    torch.manual_seed(0)
    model = create_model("resnet32_global", iterations=iterations)
    if reference:
        model = with_reference_layers(model)
    x = torch.randn(BATCH, 3, 32, 32)
    y = torch.randint(0, 10, (BATCH,))
    step = _training(model, x, y)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(3):
        step()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) / 1024)  # ru_maxrss is in KiB on Linux


def markdown(results: dict[str, dict[str, float]]) -> str:
    lines = ["| model | inference img/s | vs resnet32 | training img/s | vs resnet32 |", "|---|---|---|---|---|"]
    for name in results["inference"]:
        inf, tr = results["inference"][name], results["training"][name]
        lines.append(
            f"| {name} | {inf:.0f} | **{inf / results['inference']['resnet32']:.2f}x** | {tr:.0f} | "
            f"**{tr / results['training']['resnet32']:.2f}x** |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--reps", type=int, default=9, help="interleaved repetitions per model")
    parser.add_argument("--compile", action="store_true", help="compile the Global layers (pdenas.nn.set_compile(True))")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child is not None:
        set_compile(args.compile)
        _memory_child(args.memory_child, reference=args.reference)
        return {}
    print(f"# resnet32_global vs resnet32 ({'compiled' if args.compile else 'eager'}); {environment()}", flush=True)
    results = bench_model(reps=args.reps, compile=args.compile)
    print(markdown(results), flush=True)
    if not args.no_memory:
        results["memory MiB"] = {}
        for label, reference in (("fast", False), ("reference", True)):
            mib = {k: peak_training_memory(k, compile=args.compile, threads=args.threads, reference=reference) for k in (1, 5)}
            print(
                f"peak training memory growth of resnet32_global ({label}) at batch {BATCH}: "
                f"K=1 {mib[1]:.0f} MiB, K=5 {mib[5]:.0f} MiB, ratio {mib[5] / mib[1]:.2f} (goal <= 1.5)",
                flush=True,
            )
            results["memory MiB"].update({f"{label} K=1": mib[1], f"{label} K=5": mib[5]})
    return results


if __name__ == "__main__":
    main()
