"""Benchmark: Global-layer models against their originals in every runtime a user deploys to (issue 14;
Kag & Saligrama, CVPR 2022, Table 1).

One process, side by side: ``resnet32_global`` vs ``resnet32`` and ``resnet56_global`` vs ``resnet56``
(K = 1, dt = 0.2), each written with pdenas' own writers (:mod:`pdenas.export`) and run as

* ``torch``: eager PyTorch (eval mode, ``torch.inference_mode``);
* ``torchscript``: ``export_torchscript``, traced at the batch size it is timed at, run with ``torch.jit.load``;
* ``onnxruntime``: ``export_onnx`` (dynamic batch), an ``InferenceSession`` with ``intra_op_num_threads``;
* ``aoti``: ``export_aoti`` (AOTInductor, dynamic batch, freezing on), run with ``aoti_load_package``;

at batch 1 and 64, 3x32x32, with ``--threads`` threads (default 2). Within a batch size every (model,
runtime) pair runs in turn, round after round (``--rounds``), each turn a block of calls of about
``--block`` seconds; the figure is the median over rounds of the time per call, wall clock, with the
median process CPU time per call next to it as a check (on a shared machine the two disagree when the
load changed). Ratios are original / Global (above 1: the Global model is faster). "fastest vs fastest"
divides the original's fastest runtime by the Global model's fastest. Each file's logits are checked
against eager PyTorch first (max abs diff <= 1e-4 of the largest logit, at least 1e-4).

``resnet32_global without Global layers`` (the identity in their place) bounds what any Global layer
implementation can reach; it runs in eager and ONNX Runtime.

    python benchmarks/bench_runtimes.py [--threads 2] [--rounds 9] [--runtimes torch,torchscript,onnxruntime,aoti]
    python benchmarks/bench_runtimes.py --profile       # ONNX Runtime's per-operator profile of resnet32_global

The AOTInductor packages compile C++ (about a minute each on 2 cores; inductor's on-disk cache makes a
second run faster). Run with ``OMP_WAIT_POLICY=PASSIVE`` on a shared machine (see ``run_all.py``).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from bench_layer import environment  # noqa: E402
from bench_model import without_global_layers  # noqa: E402
from pdenas.export import aoti_runner, export_aoti, export_onnx, export_torchscript  # noqa: E402
from pdenas.zoo import create_model  # noqa: E402

PAIRS = [("resnet32", "resnet32_global"), ("resnet56", "resnet56_global")]
CEILING = "resnet32_global without Global layers"
BATCHES = (1, 64)
RUNTIMES = ("torch", "torchscript", "onnxruntime", "aoti")
TOLERANCE = 1e-4


def build_models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    models = {name: create_model(name).eval() for pair in PAIRS for name in pair}
    models[CEILING] = without_global_layers(create_model("resnet32_global")).eval()
    return models


def runners(models: dict[str, nn.Module], runtimes: list[str], threads: int, folder: Path) -> dict[tuple[str, str, int], Callable[[], Any]]:
    """(model, runtime, batch) -> a call running one batch; every file checked against eager first."""
    import onnxruntime as ort

    calls: dict[tuple[str, str, int], Callable[[], Any]] = {}
    for name, model in models.items():
        for runtime in runtimes:
            if name == CEILING and runtime not in ("torch", "onnxruntime"):
                continue
            start = time.perf_counter()
            for batch in BATCHES:
                x = torch.randn(batch, 3, 32, 32)
                with torch.no_grad():
                    expected = model(x)
                file = folder / f"{name.replace(' ', '_')}-{batch}"
                if runtime == "torch":
                    run = _torch_call(model)
                elif runtime == "torchscript":
                    export_torchscript(model, file.with_suffix(".pt"), x)
                    run = _torch_call(torch.jit.load(str(file.with_suffix(".pt"))))
                elif runtime == "aoti":
                    if batch == BATCHES[0]:
                        export_aoti(model, file.with_suffix(".pt2"), x)  # dynamic batch: one package
                        package = aoti_runner(file.with_suffix(".pt2"))
                    run = _torch_call(package)
                else:
                    if batch == BATCHES[0]:
                        export_onnx(model, file.with_suffix(".onnx"), x)  # dynamic batch: one file
                        options = ort.SessionOptions()
                        options.intra_op_num_threads = threads
                        options.inter_op_num_threads = 1
                        session = ort.InferenceSession(str(file.with_suffix(".onnx")), options, providers=["CPUExecutionProvider"])
                    run = _onnx_call(session)
                diff = float(np.abs(np.asarray(run(x)) - expected.numpy()).max())
                scale = max(1.0, float(expected.abs().max()))  # random weights: deep models' logits reach 1e3
                if diff > TOLERANCE * scale:
                    raise SystemExit(f"{name} in {runtime} at batch {batch}: max abs diff {diff:.2e} > {TOLERANCE} x {scale:.3g}")
                feed = torch.randn(batch, 3, 32, 32)
                calls[(name, runtime, batch)] = _bound(run, feed.numpy() if runtime == "onnxruntime" else feed)
            print(f"  {name} in {runtime}: ready in {time.perf_counter() - start:.0f} s (logits checked)", flush=True)
    return calls


def _torch_call(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], Any]:
    def run(x: torch.Tensor) -> Any:
        with torch.inference_mode():
            return fn(x)

    return run


def _onnx_call(session: Any) -> Callable[[torch.Tensor], Any]:
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy() if isinstance(x, torch.Tensor) else x})[0]


def _bound(run: Callable[[Any], Any], feed: Any) -> Callable[[], Any]:
    return lambda: run(feed)


def interleaved(calls: dict[Any, Callable[[], Any]], *, rounds: int, block: float) -> dict[Any, tuple[float, float]]:
    """Median (wall, CPU) seconds per call of each call, the calls run in turn ``rounds`` times, each turn
    a block of about ``block`` seconds."""
    counts = {}
    for key, call in calls.items():
        call()
        start = time.perf_counter()
        call()
        counts[key] = max(1, int(block / max(time.perf_counter() - start, 1e-6)))
    wall: dict[Any, list[float]] = collections.defaultdict(list)
    cpu: dict[Any, list[float]] = collections.defaultdict(list)
    for _ in range(rounds):
        for key, call in calls.items():
            n = counts[key]
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(n):
                call()
            cpu[key].append((time.process_time() - start_cpu) / n)
            wall[key].append((time.perf_counter() - start) / n)
    return {key: (statistics.median(wall[key]), statistics.median(cpu[key])) for key in calls}


def report(times: dict[tuple[str, str, int], tuple[float, float]], runtimes: list[str]) -> str:
    lines = []
    for batch in BATCHES:
        lines += [f"\nBatch {batch}: ms per call (CPU ms), and original / Global (CPU-time ratio)\n",
                  "| runtime | " + " | ".join(f"{a} | {b} | ratio" for a, b in PAIRS) + f" | {CEILING} | vs resnet32 |",
                  "|---|" + "---|---|---|" * len(PAIRS) + "---|---|"]
        for runtime in runtimes:
            cells = []
            for original, glob in PAIRS:
                (wa, ca), (wb, cb) = times[(original, runtime, batch)], times[(glob, runtime, batch)]
                cells.append(f"{1e3 * wa:.2f} ({1e3 * ca:.2f}) | {1e3 * wb:.2f} ({1e3 * cb:.2f}) | **{wa / wb:.2f}x** ({ca / cb:.2f}x)")
            ceiling = times.get((CEILING, runtime, batch))
            if ceiling is not None:
                wa, ca = times[("resnet32", runtime, batch)]
                cells.append(f"{1e3 * ceiling[0]:.2f} ({1e3 * ceiling[1]:.2f}) | {wa / ceiling[0]:.2f}x ({ca / ceiling[1]:.2f}x)")
            else:
                cells.append("- | -")
            lines.append(f"| {runtime} | " + " | ".join(cells) + " |")
        for original, glob in PAIRS:
            best_a = min(runtimes, key=lambda r: times[(original, r, batch)][0])
            best_b = min(runtimes, key=lambda r: times[(glob, r, batch)][0])
            (wa, ca), (wb, cb) = times[(original, best_a, batch)], times[(glob, best_b, batch)]
            lines.append(f"\nfastest vs fastest, batch {batch}: {original} in {best_a} {1e3 * wa:.2f} ms, {glob} in {best_b} "
                         f"{1e3 * wb:.2f} ms: **{wa / wb:.2f}x** (CPU time {ca / cb:.2f}x)")
    return "\n".join(lines)


def profile_onnx(threads: int, batch: int) -> None:
    """ONNX Runtime's per-operator time of resnet32_global and resnet32 (after its graph optimisations)."""
    import onnxruntime as ort

    models = build_models()
    with tempfile.TemporaryDirectory() as folder:
        for name in ("resnet32", "resnet32_global", CEILING):
            path = Path(folder) / "model.onnx"
            export_onnx(models[name], path, torch.randn(batch, 3, 32, 32))
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(folder) / "profile")
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            x = np.random.randn(batch, 3, 32, 32).astype(np.float32)
            for _ in range(5):
                session.run(None, {"input": x})
            runs = 20 if batch == 1 else 5
            for _ in range(runs):
                session.run(None, {"input": x})
            events = json.loads(Path(session.end_profiling()).read_text())
            per_op: dict[str, float] = collections.Counter()
            count: dict[str, int] = collections.Counter()
            for event in events:
                if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                    per_op[event["args"]["op_name"]] += event["dur"] / 1e3 / (runs + 5)
                    count[event["args"]["op_name"]] += 1
            total = sum(per_op.values())
            print(f"\n{name}, ONNX Runtime, batch {batch}, {threads} threads: {total:.2f} ms of operators per call")
            for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1]):
                print(f"  {op:20s} {ms:8.3f} ms  {100 * ms / total:5.1f} %  ({count[op] // (runs + 5)} nodes)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of every runtime (default 2)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument("--block", type=float, default=0.05, help="seconds per timed block (default 0.05)")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated subset of " + ", ".join(RUNTIMES))
    parser.add_argument("--profile", action="store_true", help="print ONNX Runtime's per-operator profiles and exit")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.load's deprecation
    if args.profile:
        for batch in BATCHES:
            profile_onnx(args.threads, batch)
        return
    runtimes = [r for r in args.runtimes.split(",") if r]
    unknown = sorted(set(runtimes) - set(RUNTIMES))
    if unknown:
        raise SystemExit(f"unknown runtime(s) {unknown}; known: {', '.join(RUNTIMES)}")
    print(f"# Global models vs originals in every runtime; {environment()}", flush=True)
    models = build_models()
    with tempfile.TemporaryDirectory(prefix="pdenas-bench-") as folder:
        calls = runners(models, runtimes, args.threads, Path(folder))
    times: dict[tuple[str, str, int], tuple[float, float]] = {}
    for batch in BATCHES:
        print(f"  timing batch {batch} ({args.rounds} interleaved rounds)...", flush=True)
        times.update(interleaved({k: c for k, c in calls.items() if k[2] == batch}, rounds=args.rounds, block=args.block))
    print(report(times, runtimes), flush=True)


if __name__ == "__main__":
    main()
