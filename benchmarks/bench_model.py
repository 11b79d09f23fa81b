"""Benchmark: ``resnet32_global`` against ``resnet32`` in images/s (issue 7; Kag & Saligrama, CVPR 2022,
Table 1: 4.6x fewer MACs).

Three models run interleaved in one process at batch 128, 3x32x32:

* ``resnet32``: the baseline ResNet (no Global layer; pdenas does not change it);
* ``resnet32_global (reference)``: the same Global model with the literal Global layer of the
  paper's code (what the issue measured: about 1.05x);
* ``resnet32_global``: the default fast path (``--compile``: with ``pdenas.nn.set_compile(True)``);
* ``resnet32_global without Global layers``: the ceiling, what the rest of the model costs.

Inference is an eval-mode forward under ``torch.inference_mode``; training is one SGD step
(forward, cross-entropy, backward, update). ``--channels-last`` runs models and inputs in channels-last
memory format and ``--bf16`` under bfloat16 autocast (``pdenas.train``'s ``channels_last`` and
``precision="bf16"``). Peak training memory of ``resnet32_global`` at K = 1
and K = 5 is the growth of the peak resident set size over a few training steps,
each in a fresh subprocess (``VmHWM`` after ``clear_refs``, over ``VmRSS`` before).

    python benchmarks/bench_model.py [--threads 2] [--reps 9] [--compile] [--no-memory] [--channels-last] [--bf16]
"""

from __future__ import annotations

import argparse
import contextlib
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


def without_global_layers(model: nn.Module) -> nn.Module:
    """``model`` with every GlobalLayer replaced by the identity (the speed-up's ceiling)."""
    for name, child in model.named_children():
        if isinstance(child, GlobalLayer):
            setattr(model, name, nn.Identity())
        else:
            without_global_layers(child)
    return model


def with_reference_layers(model: nn.Module) -> nn.Module:
    """``model`` with every GlobalLayer replaced by the literal reference (parameters shared)."""
    for name, child in model.named_children():
        if isinstance(child, GlobalLayer):
            setattr(model, name, _ReferenceGlobal(child))
        else:
            with_reference_layers(child)
    return model


def _autocast(bf16: bool) -> contextlib.AbstractContextManager[object]:
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _inference(model: nn.Module, x: torch.Tensor, bf16: bool = False) -> Callable[[], object]:
    def run() -> None:
        model.eval()
        with torch.inference_mode(), _autocast(bf16):
            model(x)

    return run


def _training(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool = False) -> Callable[[], object]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def run() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with _autocast(bf16):
            logits = model(x)
        nn.functional.cross_entropy(logits.float(), y).backward()
        optimizer.step()

    return run


def bench_model(
    *, reps: int, compile: bool, iterations: int = 1, channels_last: bool = False, bf16: bool = False
) -> dict[str, dict[str, float]]:
    set_compile(compile)
    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(BATCH, 3, 32, 32).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (BATCH,))
    models = {
        "resnet32": create_model("resnet32"),
        "resnet32_global (reference)": with_reference_layers(create_model("resnet32_global", iterations=iterations)),
        "resnet32_global": create_model("resnet32_global", iterations=iterations),
        "resnet32_global without Global layers": without_global_layers(create_model("resnet32_global")),
    }
    models = {name: model.to(memory_format=memory_format) for name, model in models.items()}
    results: dict[str, dict[str, float]] = {}
    for mode, make in (("inference", lambda m: _inference(m, x, bf16)), ("training", lambda m: _training(m, x, y, bf16))):
        fns = {name: make(model) for name, model in models.items()}
        if compile:
            start = time.perf_counter()
            fns["resnet32_global"]()
            print(f"  compiling resnet32_global for {mode}: {time.perf_counter() - start:.0f} s", flush=True)
        t = interleaved_medians(fns, reps=reps)
        results[mode] = {name: BATCH / timing.wall for name, timing in t.items()}
        results[f"{mode} cpu"] = {name: BATCH / timing.cpu for name, timing in t.items()}
        base, base_cpu = results[mode]["resnet32"], results[f"{mode} cpu"]["resnet32"]
        print(
            f"{mode}: " + ", ".join(
                f"{name} {ips:.0f} img/s (x{ips / base:.2f}; CPU time x{results[f'{mode} cpu'][name] / base_cpu:.2f})"
                for name, ips in results[mode].items()
            ),
            flush=True,
        )
    return results


def peak_training_memory(iterations: int, *, compile: bool, threads: int | None, reference: bool = False) -> float:
    """MiB by which the peak RSS of 3 training steps of resnet32_global exceeds the RSS before them (fresh process)."""
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
    before = _status_kib("VmRSS")
    _reset_peak_rss()
    for _ in range(3):
        step()
    print((_status_kib("VmHWM") - before) / 1024)


def _status_kib(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process, in KiB.

    Not ``ru_maxrss``: it survives fork and exec, so a child would report its parent's size.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass


def profile_model(*, rows: int = 18, channels_last: bool = False, bf16: bool = False) -> None:
    """The top operators by self CPU time in 3 inference and 3 training steps of resnet32_global."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(BATCH, 3, 32, 32).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (BATCH,))
    model = create_model("resnet32_global").to(memory_format=memory_format)
    for mode, step in (("inference", _inference(model, x, bf16)), ("training", _training(model, x, y, bf16))):
        step()
        step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                step()
        print(f"\nprofile of resnet32_global, {mode} (3 steps):")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=45))


def markdown(results: dict[str, dict[str, float]]) -> str:
    lines = [
        "| model | inference img/s | vs resnet32 (CPU time) | training img/s | vs resnet32 (CPU time) |",
        "|---|---|---|---|---|",
    ]
    for name in results["inference"]:
        cells = []
        for mode in ("inference", "training"):
            ips, cpu = results[mode][name], results[f"{mode} cpu"][name]
            ratio, cpu_ratio = ips / results[mode]["resnet32"], cpu / results[f"{mode} cpu"]["resnet32"]
            cells.append(f"{ips:.0f} | **{ratio:.2f}x** ({cpu_ratio:.2f}x)")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--reps", type=int, default=7, help="interleaved repetitions per model")
    parser.add_argument("--compile", action="store_true", help="compile the Global layers (pdenas.nn.set_compile(True))")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--channels-last", action="store_true", help="models and inputs in channels-last memory format")
    parser.add_argument("--bf16", action="store_true", help="under bfloat16 autocast")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler tables of resnet32_global and exit")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        set_compile(args.compile)
        profile_model(channels_last=args.channels_last, bf16=args.bf16)
        return {}
    if args.memory_child is not None:
        set_compile(args.compile)
        _memory_child(args.memory_child, reference=args.reference)
        return {}
    setting = ", ".join(["compiled" if args.compile else "eager"] + ["channels-last"] * args.channels_last + ["bf16 autocast"] * args.bf16)
    print(f"# resnet32_global vs resnet32 ({setting}); {environment()}", flush=True)
    results = bench_model(reps=args.reps, compile=args.compile, channels_last=args.channels_last, bf16=args.bf16)
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
