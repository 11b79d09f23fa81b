"""Run the speed benchmarks of issues 7 and 14 (Kag & Saligrama, CVPR 2022), each in its own process (the
compile switch is process-wide): the Global layer and the model, eager and compiled; the models in every
deployment runtime (ONNX Runtime, TorchScript, AOTInductor, eager); the data loader against training
speed; the search's overhead outside training and evaluation.

    python benchmarks/run_all.py [--threads 2] [--quick]

``--quick`` skips the compiled runs (which spend a minute or two compiling on a CPU) and the
AOTInductor packages.

The children run with ``OMP_WAIT_POLICY=PASSIVE`` unless the variable is set: on a machine shared
with other jobs, OpenMP's default spin-waiting turns every parallel op into a wait for a descheduled
thread (one elementwise op on a (128, 16, 32, 32) tensor took 16 ms with 2 threads instead of 1.2 ms).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--quick", action="store_true", help="eager runs only")
    args = parser.parse_args()
    common = ["--threads", str(args.threads)] if args.threads else []
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    runs = [["bench_layer.py"], ["bench_model.py"], ["bench_model.py", "--channels-last", "--no-memory"]]
    if not args.quick:
        runs += [["bench_layer.py", "--compile"], ["bench_model.py", "--compile", "--no-memory"]]
    runs += [["bench_runtimes.py"] + (["--runtimes", "torch,torchscript,onnxruntime"] if args.quick else [])]
    runs += [["bench_data.py"], ["bench_search_overhead.py"]]
    for run in runs:
        if run[0] == "bench_runtimes.py":  # its own default: 2 threads, as issue 14 measures
            run = run + (common if args.threads else [])
        elif run[0] != "bench_search_overhead.py":  # a whole default search: torch's own thread count
            run = run + common
        print(f"\n$ OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']} python benchmarks/{' '.join(run)}", flush=True)
        code = subprocess.call([sys.executable, str(HERE / run[0]), *run[1:]], env=env)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
