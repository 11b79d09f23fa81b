"""Benchmark: Global-layer models against their originals in every runtime a user deploys to (issue 14;
Kag & Saligrama, CVPR 2022, Table 1).

One process, side by side, each compressed model against its original: ``resnet32_global`` vs ``resnet32``
and ``resnet56_global`` vs ``resnet56`` (K = 1, dt = 0.2); ``resnet32`` compressed with ``pdenas.compress``
to keep 1 block per stage plus a Global layer (K = 1, dt = 0.2; the paper's plan on a trained network's
block order) against ``resnet32`` and against the same plan without Global layers (``keep-1``), and with
the ``diffusion`` variant's layer (no advection: about half the operations); and,
when ``benchmarks/models/MANIFEST.json`` exists, every model listed there (``pdenas.load_compressed``)
against the original listed there. Each is written with pdenas' own writers (:mod:`pdenas.export`) and run as

* ``torch``: eager PyTorch (eval mode, ``torch.inference_mode``);
* ``torchscript``: ``export_torchscript``, traced at the batch size it is timed at, run with ``torch.jit.load``;
* ``onnxruntime``: ``export_onnx(form="conv")`` (dynamic batch; the Global layers' narrow form, about 31
  operations each C wide), an ``InferenceSession`` with ``intra_op_num_threads``;
* ``onnxruntime-compact``: the same with ``form="compact"`` (the fewest operations, 4 to 7 C wide);
* ``aoti``: ``export_aoti`` (AOTInductor, dynamic batch, freezing on), run with ``aoti_load_package``;

at batch 1 and 64, 3x32x32, with ``--threads`` threads (default 2). Within a batch size every (model,
runtime) pair runs in turn, round after round (``--rounds``), each turn a block of calls of about
``--block`` seconds; the figure is the median over rounds of the time per call, wall clock, with the
median process CPU time per call next to it as a check (on a shared machine the two disagree when the
load changed). Ratios are original / compressed (above 1: the compressed model is faster); next to the
ONNX Runtime ratios, the conv-MAC ratio and the time ratio divided by it (issue 14's goal: at least 0.6 at
batch 1). "fastest vs fastest" divides the original's fastest runtime by the compressed model's fastest. Each file's logits are checked
against eager PyTorch first (max abs diff <= 1e-4 of the largest logit, at least 1e-4).

``resnet32_global without Global layers`` (the identity in their place) bounds what any Global layer
implementation can reach; it runs in eager and ONNX Runtime.

    python benchmarks/bench_runtimes.py [--threads 2] [--rounds 9] [--runtimes torch,torchscript,onnxruntime,onnxruntime-compact,aoti]
    python benchmarks/bench_runtimes.py --profile       # ONNX Runtime's per-operator profiles, both ONNX forms

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
from pdenas import CompressionPlan, GlobalLayer, GlobalLayerConfig, StagePlan, compress, find_stages, load_compressed, profile  # noqa: E402
from pdenas._util import first_line  # noqa: E402
from pdenas.export import aoti_runner, export_aoti, export_onnx, export_torchscript, onnx_session  # noqa: E402
from pdenas.zoo import create_model  # noqa: E402

KEEP1 = "resnet32 keep-1"
KEEP1_GLOBAL = "resnet32 keep-1 + Global"
KEEP1_DIFFUSION = "resnet32 keep-1 + Global (diffusion only)"
CEILING = "resnet32_global without Global layers"
# (original, compressed): the ratio original / compressed of each is reported
PAIRS = [("resnet32", "resnet32_global"), ("resnet56", "resnet56_global"), ("resnet32", KEEP1_GLOBAL),
         (KEEP1, KEEP1_GLOBAL), ("resnet32", KEEP1_DIFFUSION), ("resnet32", KEEP1), ("resnet32", CEILING)]
BATCHES = (1, 64)
RUNTIMES = ("torch", "torchscript", "onnxruntime", "onnxruntime-compact", "aoti")
ONNX_FORMS = {"onnxruntime": "conv", "onnxruntime-compact": "compact"}
TOLERANCE = 1e-4
MANIFEST = Path(__file__).resolve().parent / "models" / "MANIFEST.json"
INPUT = (3, 32, 32)


def keep_one(model: nn.Module, config: GlobalLayerConfig | None) -> nn.Module:
    """``model`` keeping the first block of every stage, with a Global layer of ``config`` (or none)."""
    x = torch.zeros(1, *INPUT)
    plan = CompressionPlan({s.name: StagePlan(keep=1, global_layer=config) for s in find_stages(model, x)})
    return compress(model, plan, x).eval()


def build_models() -> tuple[dict[str, nn.Module], list[tuple[str, str]]]:
    """The models by name and the (original, compressed) pairs to compare, the manifest's included."""
    torch.manual_seed(0)
    models = {name: create_model(name).eval() for name in ("resnet32", "resnet32_global", "resnet56", "resnet56_global")}
    models[KEEP1] = keep_one(models["resnet32"], None)
    models[KEEP1_GLOBAL] = keep_one(models["resnet32"], GlobalLayerConfig(iterations=1, dt=0.2))
    models[KEEP1_DIFFUSION] = keep_one(models["resnet32"], GlobalLayerConfig(iterations=1, dt=0.2, advection=False))
    models[CEILING] = without_global_layers(create_model("resnet32_global")).eval()
    pairs = list(PAIRS)
    if MANIFEST.is_file():
        entries = json.loads(MANIFEST.read_text())["models"]
        originals = [e for e in entries if e.get("original")]
        if len(originals) != 1:
            raise SystemExit(f"{MANIFEST}: expected one model marked original, found {len(originals)}")
        loaded = {}
        for entry in entries:
            try:
                loaded[entry["file"]] = load_compressed(MANIFEST.parent / entry["file"]).eval()
            except Exception as err:  # noqa: BLE001 - a listed file that cannot be loaded is reported, not timed
                print(f"  skipping {entry['file']}: {type(err).__name__}: {first_line(err)}", flush=True)
        original = originals[0]["file"]
        if original in loaded:
            models.update(loaded)
            pairs += [(original, e["file"]) for e in entries if not e.get("original") and e["file"] in loaded]
    else:
        print(f"  ({MANIFEST.relative_to(MANIFEST.parents[2])} does not exist: no committed Pareto models to time)", flush=True)
    return models, pairs


def conv_macs(models: dict[str, nn.Module]) -> dict[str, int]:
    return {name: profile(model, INPUT).conv_macs for name, model in models.items()}


def runners(models: dict[str, nn.Module], runtimes: list[str], threads: int, folder: Path) -> dict[tuple[str, str, int], Callable[[], Any]]:
    """(model, runtime, batch) -> a call running one batch; every file checked against eager first."""
    calls: dict[tuple[str, str, int], Callable[[], Any]] = {}
    for name, model in models.items():
        for runtime in runtimes:
            if name == CEILING and runtime not in ("torch", "onnxruntime"):
                continue
            if runtime == "onnxruntime-compact" and not any(isinstance(m, GlobalLayer) for m in model.modules()):
                continue  # the same file as "onnxruntime": the report reads that one
            start = time.perf_counter()
            for batch in BATCHES:
                x = torch.randn(batch, *INPUT)
                with torch.no_grad():
                    expected = model(x)
                file = folder / f"{name.replace(' ', '_').replace('/', '_')}-{runtime}-{batch}"
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
                    if batch == BATCHES[0]:  # dynamic batch: one file per form
                        export_onnx(model, file.with_suffix(".onnx"), x, form=ONNX_FORMS[runtime])  # type: ignore[arg-type]
                        session = onnx_session(file.with_suffix(".onnx"), threads=threads)
                    run = _onnx_call(session)
                diff = float(np.abs(np.asarray(run(x)) - expected.numpy()).max())
                scale = max(1.0, float(expected.abs().max()))  # random weights: deep models' logits reach 1e3
                if diff > TOLERANCE * scale:
                    raise SystemExit(f"{name} in {runtime} at batch {batch}: max abs diff {diff:.2e} > {TOLERANCE} x {scale:.3g}")
                feed = torch.randn(batch, *INPUT)
                calls[(name, runtime, batch)] = _bound(run, feed.numpy() if runtime in ONNX_FORMS else feed)
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


def report(times: dict[tuple[str, str, int], tuple[float, float]], runtimes: list[str], pairs: list[tuple[str, str]],
           macs: dict[str, int]) -> str:
    times = dict(times)
    for (name, runtime, batch), t in list(times.items()):  # a model without Global layers: one ONNX file for both forms
        if runtime == "onnxruntime" and "onnxruntime-compact" in runtimes:
            times.setdefault((name, "onnxruntime-compact", batch), t)
    lines = []
    names = list(dict.fromkeys(n for pair in pairs for n in pair))
    onnx = [r for r in runtimes if r in ONNX_FORMS]
    for batch in BATCHES:
        lines += [f"\nBatch {batch}: ms per call (CPU ms)\n", "| model | " + " | ".join(runtimes) + " |",
                  "|---|" + "---|" * len(runtimes)]
        for name in names:
            cells = [f"{1e3 * times[k][0]:.2f} ({1e3 * times[k][1]:.2f})" if (k := (name, r, batch)) in times else "-"
                     for r in runtimes]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += [(f"\nBatch {batch}: original / compressed, wall (CPU time); conv-MAC ratio; for ONNX Runtime the time "
                   "ratio / MAC ratio (goal >= 0.6 at batch 1)\n"),
                  "| original | compressed | conv-MAC ratio | " + " | ".join(runtimes) + " | best ONNX Runtime / MAC ratio |",
                  "|---|---|---|" + "---|" * len(runtimes) + "---|"]
        for original, compressed in pairs:
            mac = macs[original] / macs[compressed]
            cells, best = [], None
            for r in runtimes:
                a, b = times.get((original, r, batch)), times.get((compressed, r, batch))
                if a is None or b is None:
                    cells.append("-")
                    continue
                cells.append(f"**{a[0] / b[0]:.2f}x** ({a[1] / b[1]:.2f}x)")
            if onnx and all((n, r, batch) in times for n in (original, compressed) for r in onnx):
                # each model in its faster ONNX form (the form export_onnx would be told to write for it)
                a = min(times[(original, r, batch)][0] for r in onnx)
                b = min(times[(compressed, r, batch)][0] for r in onnx)
                best = a / b
            tail = f"{best:.2f}x / {mac:.2f} = **{best / mac:.2f}**" if best is not None else "-"
            lines.append(f"| {original} | {compressed} | {mac:.2f}x | " + " | ".join(cells) + f" | {tail} |")
        for original, compressed in pairs:
            usable = [r for r in runtimes if (original, r, batch) in times and (compressed, r, batch) in times]
            if len(usable) < 2:
                continue
            best_a = min(usable, key=lambda r: times[(original, r, batch)][0])
            best_b = min(usable, key=lambda r: times[(compressed, r, batch)][0])
            (wa, ca), (wb, cb) = times[(original, best_a, batch)], times[(compressed, best_b, batch)]
            lines.append(f"\nfastest vs fastest, batch {batch}: {original} in {best_a} {1e3 * wa:.2f} ms, {compressed} in "
                         f"{best_b} {1e3 * wb:.2f} ms: **{wa / wb:.2f}x** (CPU time {ca / cb:.2f}x)")
    return "\n".join(lines)


def profile_onnx(threads: int, batch: int) -> None:
    """ONNX Runtime's per-operator time (after its graph optimisations) of resnet32, the keep-1 plans and
    resnet32_global, the Global models in both ONNX forms; the Global layers' operators summed apart."""
    import onnxruntime as ort

    models, _ = build_models()
    with tempfile.TemporaryDirectory() as folder:
        for name in ("resnet32", KEEP1, KEEP1_GLOBAL, "resnet32_global"):
            forms = ("conv", "compact") if "lobal" in name else ("conv",)
            for form in forms:
                path = Path(folder) / "model.onnx"
                export_onnx(models[name], path, torch.randn(batch, *INPUT), form=form)  # type: ignore[arg-type]
                options = ort.SessionOptions()
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                options.enable_profiling = True
                options.profile_file_prefix = str(Path(folder) / "profile")
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                x = np.random.randn(batch, *INPUT).astype(np.float32)
                runs = 200 if batch == 1 else 5
                for _ in range(runs):
                    session.run(None, {"input": x})
                events = json.loads(Path(session.end_profiling()).read_text())
                per_op: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
                calls = [e["dur"] for e in events if e.get("name") == "model_run"]
                for event in events:
                    if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                        node = event["name"][: -len("_kernel_time")]
                        # the Global layers are the second child of each stage in these models (layerN.1)
                        part = "Global layers" if (".1/" in node or ".1_" in node) and "lobal" in name else "backbone"
                        per_op[(part, event["args"]["op_name"])].append(event["dur"])
                # medians per node call, times calls per run: robust to the load's preemptions
                nodes = {k: len(v) // runs for k, v in per_op.items()}
                median = {k: statistics.median(v) * nodes[k] / 1e3 for k, v in per_op.items()}
                total = sum(median.values())
                print(f"\n{name} ({form}), ONNX Runtime, batch {batch}, {threads} threads: run median "
                      f"{statistics.median(calls) / 1e3:.3f} ms, operators {total:.3f} ms (sum of per-node medians), "
                      f"{sum(nodes.values())} nodes")
                for part in ("backbone", "Global layers"):
                    share = {op: ms for (p, op), ms in median.items() if p == part}
                    if share:
                        print(f"  {part}: {sum(share.values()):.3f} ms in {sum(n for (p, _), n in nodes.items() if p == part)} nodes")
                    for op, ms in sorted(share.items(), key=lambda kv: -kv[1]):
                        n = nodes[(part, op)]
                        print(f"    {op:16s} {ms:7.3f} ms  {n:3d} nodes  {1e3 * ms / n:6.1f} us each")


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
    models, pairs = build_models()
    macs = conv_macs(models)
    with tempfile.TemporaryDirectory(prefix="pdenas-bench-") as folder:
        calls = runners(models, runtimes, args.threads, Path(folder))
    times: dict[tuple[str, str, int], tuple[float, float]] = {}
    for batch in BATCHES:
        print(f"  timing batch {batch} ({args.rounds} interleaved rounds)...", flush=True)
        times.update(interleaved({k: c for k, c in calls.items() if k[2] == batch}, rounds=args.rounds, block=args.block))
    print(report(times, runtimes, pairs, macs), flush=True)


if __name__ == "__main__":
    main()
