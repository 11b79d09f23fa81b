"""The ``pdenas`` command line: a thin layer over the public API.

    pdenas search [--config YAML] [--model M] ...   search (or resume) and write the report
    pdenas worker ...                               the same as search: join a shared study
    pdenas status DIR                               trials by state, the Pareto set, the original
    pdenas report DIR / pdenas show DIR             the HTML report / the Pareto table
    pdenas export DIR --trial N                     rebuild, fine-tune and save a candidate
    pdenas evaluate MODEL --dataset DIR             accuracy, MACs, params, latency of an exported model
    pdenas info [--model M] [--input 3x32x32]       the stages, parameters and MACs pdenas sees
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

from rich.console import Console

__all__ = ["main"]

RUNTIME_CHOICES = ("torch", "torchscript", "onnxruntime", "aoti")  # pdenas.cost.RUNTIMES, without importing torch for --help

# markup off: user text (paths, model names, errors such as "pip install 'pdenas[onnx]'") prints as it is
console = Console(markup=False, highlight=False)
err_console = Console(stderr=True, markup=False, highlight=False)


class CliError(Exception):
    """A one-line error for the user."""


class _Parser(argparse.ArgumentParser):
    """argparse, whose errors are one line: the flag, what is wrong with it, and where the help is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# Every flag is checked as it is read, before any work: argparse names the flag ("argument --workers: ...").


def _whole(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text!r}")
        return value

    return parse


def _whole_or_all(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return _whole(1)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1 or 'all', got {text!r}") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return value


def _name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _input_size(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"must look like 3x32x32 (channels x height x width), got {text!r}")
    return parts  # type: ignore[return-value]


def _limit(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"must be a number > 0 (absolute MACs, or a fraction like 0.5 or 50% of the original), got {text!r}"
        )
    return value


# ---------------------------------------------------------------------------------------------- info


def cmd_info(args: argparse.Namespace) -> int:
    from rich.table import Table
    from rich.text import Text

    from . import _format as fmt
    from .cost import profile
    from .surgery import CompressionPlan, NoStagesError, build_model, compress, find_stages, load_weights
    from .zoo import list_models

    import torch

    model = build_model(args.model, num_classes=args.num_classes, in_channels=args.input[0])
    if args.weights:
        load_weights(model, args.weights)
    cost = profile(model, args.input)
    console.print(Text(args.model, style="bold") + f" on {'x'.join(map(str, args.input))} input: "
                  f"{cost.params:,} params, {fmt.count(cost.macs, digits=4)} MACs (honest), {fmt.count(cost.conv_macs, digits=4)} conv MACs (fvcore/paper)")
    example = torch.zeros(2, *args.input)
    console.print(_layers_table(model, example))
    try:
        stages = find_stages(model, example)
    except NoStagesError as err:
        console.print(f"no stages to compress: {err}", highlight=False)
        return 0
    table = Table(title="stages (repeated blocks pdenas can replace)", title_justify="left")
    for col in ("stage", "m", "channels", "spatial", "MACs/block", "params/block"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for s in stages:
        table.add_row(s.name, str(s.m), str(s.channels), f"{s.height}x{s.width}", fmt.count(s.block_macs, digits=4), f"{s.block_params:,}")
    console.print(table)
    paper = CompressionPlan.paper(stages)
    small = profile(compress(model, paper, example), args.input)
    console.print(
        f"the paper's plan ({paper.describe()}): {small.params:,} params ({fmt.ratio(cost.params / small.params)} fewer), "
        f"{fmt.count(small.macs, digits=4)} MACs ({fmt.ratio(cost.macs / small.macs)} fewer), "
        f"{fmt.count(small.conv_macs, digits=4)} conv MACs ({fmt.ratio(cost.conv_macs / small.conv_macs)} fewer)"
    )
    if args.model not in list_models() and not args.model.startswith("tv:") and ":" not in args.model:
        console.print(f"zoo models: {', '.join(list_models())}")
    return 0


def _layers_table(model: Any, example: Any) -> Any:
    """Top-level modules with their parameters, honest MACs and Global layers."""
    from rich.table import Table

    from . import _format as fmt
    from .cost import count_params, macs_by_module
    from .nn import GlobalLayer

    macs = macs_by_module(model, example)
    table = Table(title="layers", title_justify="left")
    for col in ("module", "params", "MACs", "Global layers"):
        table.add_column(col, justify="left" if col == "module" else "right")
    for name, child in model.named_children():
        layers = [m for m in child.modules() if isinstance(m, GlobalLayer)]
        glob = ", ".join(f"K={m.config.iterations} dt={m.config.dt:g} C={m.channels}" for m in layers)
        table.add_row(name, f"{count_params(child):,}", fmt.count(macs.get(name, 0), digits=4), glob or "-")
    return table


# -------------------------------------------------------------------------------------------- search


def _search_config(args: argparse.Namespace) -> Any:
    """The search configuration: the YAML file (--config, or the default) with the flags over it; and its path."""
    from .search import SearchConfig, default_space_path

    path = Path(args.config) if args.config else default_space_path()
    overrides = {
        "model": args.model,
        "weights": args.weights,
        "dataset": args.dataset,
        "trials": args.trials,
        "budget.epochs": args.epochs,
        "budget.subset": args.subset,
        "constraints.max_macs": args.max_macs,
        "seed": args.seed,
        "device": args.device,
    }
    return SearchConfig.from_yaml(path, **overrides), path


def _location(args: argparse.Namespace, config_path: Path) -> Any:
    from .search import StorageOptions, StudyLocation

    name = args.study_name or "pdenas"
    if args.study_dir:
        directory = Path(args.study_dir)
    elif args.storage:
        directory = Path("runs") / name
    else:
        directory = Path("runs") / config_path.stem
    given = {key: getattr(args, key) for key in ("heartbeat", "grace_period", "max_retry", "reconnect")
             if getattr(args, key) is not None}
    if given and not args.storage:
        flags = ", ".join("--" + key.replace("_", "-") for key in given)
        raise CliError(f"{flags} apply to a shared study (--storage URL) only: a study directory needs no heartbeats, "
                       "the next pdenas search recovers what a crash left running")
    if "heartbeat" in given and "grace_period" not in given:
        given["grace_period"] = 3 * given["heartbeat"]
    return StudyLocation(directory=directory, storage_url=args.storage, study_name=name, options=StorageOptions(**given))


def cmd_search(args: argparse.Namespace) -> int:
    import signal

    from .report import write_report
    from .search import SearchProgress, search
    from .train import resolve_device

    # Ctrl-C stops cleanly even when the parent shell started us with SIGINT ignored (background jobs)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    config, config_path = _search_config(args)
    location = _location(args, config_path)
    try:
        resolve_device(config.device)  # --device cuda on a machine without CUDA: say so before any work
    except ValueError as err:
        raise CliError(str(err)) from None
    command = getattr(args, "command", None) or "search"
    console.print(f"pdenas {command}: {config.model} on {config.dataset}, {config.trials} trials, {location.describe()}",
                  highlight=False, soft_wrap=True)
    with SearchProgress(config.trials, console=console) as progress:
        result = search(config, location=location, workers=args.workers, on_event=progress)
    console.print(f"{result.completed} trials finished, {result.failed} failed in {location.describe()}", highlight=False, soft_wrap=True)
    if result.interrupted:
        console.print("interrupted: run the same command again to resume", highlight=False)
        return 130
    console.print(f"report: {write_report(location.directory)}", highlight=False, soft_wrap=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from optuna.trial import TrialState

    from . import _format as fmt
    from .report import build_report_data, locate_study, open_study, print_pareto, print_stage_verdicts
    from .search import StudyRecord

    location = locate_study(Path(args.dir))
    study = open_study(location.directory)  # reads only: never creates a file
    data = build_report_data(study, importances=False)
    counts = {state.name.lower(): sum(t.state == state for t in data.trials) for state in TrialState}
    target = (StudyRecord.from_study(study, records=[]).config or {}).get("trials", "?")
    stopped = f"; {data.counts['stopped']} stopped at a rung by successive halving" if data.counts["stopped"] else ""
    console.print(f"{location.describe()}: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n) + stopped
                  + f" (target {target} finished)", highlight=False, soft_wrap=True)
    original = data.original
    if original.macs is not None:
        console.print(f"original model: accuracy {fmt.percent(original.accuracy)}, {fmt.count(original.params)} params, "
                      f"{fmt.count(original.macs, digits=4)} MACs", highlight=False)
    variants = [v for v in data.stages.variants if not v.original]
    if variants:
        trained = [t for t in data.trials if t.stagewise_time is not None and t.reused_from is None]
        console.print(f"stage-wise step: {len(variants)} stage variants in {len(trained)} trials, "
                      f"{sum(not s.reused for t in trained for s in (t.stages or {}).values())} trained and "
                      f"{sum(s.reused for t in trained for s in (t.stages or {}).values())} reused, "
                      f"{fmt.seconds(sum(t.stagewise_time or 0 for t in trained))} in all", highlight=False)
    print_pareto(data, console)
    print_stage_verdicts(data, console)
    for t in [t for t in data.trials if t.state == TrialState.FAIL][-5:]:
        console.print(f"trial {t.number} failed: {t.failure}", highlight=False, soft_wrap=True)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report
    from .search import link_study_dir

    if args.storage:  # a folder whose config.json points at the shared study: status, show, export work on it too
        name = args.study_name or "pdenas"
        location = link_study_dir(Path(args.out or args.dir or Path("runs") / name), args.storage, name)
        path = write_report(location.directory)
    elif args.dir:
        if args.study_name:
            raise CliError("--study-name goes with --storage URL; a study directory names its study in config.json")
        path = write_report(Path(args.dir), out_dir=args.out)
    else:
        raise CliError("pdenas report needs a study directory (pdenas report runs/NAME), or --storage URL --study-name NAME")
    console.print(f"report: {path}", highlight=False, soft_wrap=True)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .report import build_report_data, open_study, print_pareto

    print_pareto(build_report_data(open_study(Path(args.dir)), importances=False), console)
    return 0


# -------------------------------------------------------------------------------------------- export


def cmd_export(args: argparse.Namespace) -> int:
    from .export import ExportError, export_trial, parse_formats

    try:
        export_trial(Path(args.dir), trial=args.trial, epochs=args.epochs, subset=args.subset, out=args.out,
                     formats=parse_formats(args.format), device=args.device, runtime=args.runtime, console=console)
    except ExportError as err:
        raise CliError(str(err)) from None
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .export import ExportError, evaluate_model

    try:
        evaluate_model(Path(args.model), args.dataset, runtime=args.runtime, batch_size=args.batch_size,
                       threads=args.threads, known_classes_only=args.known_classes_only, console=console)
    except ExportError as err:
        raise CliError(str(err)) from None
    return 0


# ------------------------------------------------------------------------------------------- parser


def _add_search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML search space (default: search_spaces/default.yaml)")
    p.add_argument("--model", help="zoo name, tv:NAME or package.module:factory")
    p.add_argument("--weights", help="state dict of the model (weights_only=True)")
    p.add_argument("--dataset", help="digits, cifar10, cifar100, or a path to an ImageFolder folder or .tar.gz")
    p.add_argument("--trials", type=_whole(1), help="finished trials the study should hold")
    p.add_argument("--epochs", type=_whole(1), help="training epochs per candidate")
    p.add_argument("--subset", type=_whole(1), help="train each candidate on this many images (stratified, seeded)")
    p.add_argument("--max-macs", type=_limit, help="MAC limit: absolute, or a fraction (0.5 or 50%%) of the original")
    p.add_argument("--study-dir", help="folder for the study, config and logs (default runs/<config name>)")
    p.add_argument("--storage", help="an Optuna storage URL (e.g. postgresql://user@host:5432/db) instead of the study dir's file")
    p.add_argument("--study-name", type=_name, help="study name in the storage (default pdenas)")
    p.add_argument("--workers", type=_whole(1), default=1, help="worker processes on this machine")
    p.add_argument("--seed", type=_whole(0), help="seeds the data split, the model, training and the sampler")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    shared = p.add_argument_group("shared study (--storage)")
    shared.add_argument("--heartbeat", type=_whole(1), metavar="S",
                        help="seconds between a running trial's heartbeats (default 20)")
    shared.add_argument("--grace-period", type=_whole(1), metavar="S",
                        help="a running trial without a heartbeat for S seconds is stale: failed and re-run by another "
                        "worker (default 60, or 3x --heartbeat)")
    shared.add_argument("--max-retry", type=_whole(0), metavar="N", help="re-run a stale trial at most N times in a row (default 3)")
    shared.add_argument("--reconnect", type=_seconds, metavar="S",
                        help="keep retrying for S seconds when the connection to the storage drops (default 60)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="pdenas", description="Make a CNN smaller and faster with PDE Global layers.")
    parser.add_argument("--version", action="version", version=f"pdenas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="show the stages, parameters and MACs pdenas sees in a model")
    p.add_argument("--model", default="resnet32_global")
    p.add_argument("--weights")
    p.add_argument("--input", type=_input_size, default=(3, 32, 32), help="CxHxW, default 3x32x32")
    p.add_argument("--num-classes", type=_whole(1), default=10)
    p.set_defaults(func=cmd_info)

    for name, help_text in (("search", "search (or resume) compression plans"), ("worker", "join a (shared) study as one more worker")):
        p = sub.add_parser(name, help=help_text)
        _add_search_args(p)
        p.set_defaults(func=cmd_search)

    p = sub.add_parser("status", help="trials by state and the Pareto set of a study")
    p.add_argument("dir")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("report", help="write report.html, trials.csv and pareto.csv into a study dir")
    p.add_argument("dir", nargs="?", help="the study directory (its config.json says where the study is stored)")
    p.add_argument("--storage", help="or: the storage URL of a shared study (report from any machine)")
    p.add_argument("--study-name", type=_name, help="the study's name in --storage (default pdenas)")
    p.add_argument("--out", help="folder for the report (default: the study directory; with --storage, runs/<study name>)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("show", help="print the Pareto table of a study")
    p.add_argument("dir")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser(
        "export", help="rebuild a trial's candidate, train it, save it (checkpoint, TorchScript, ONNX) and check the files",
        description="Rebuild the chosen trial's candidate from its stored plan (same data split, base model and seed "
        "as the search), train it on the search's budget (this repeats the trial's training), then --epochs more "
        "with a fresh learning-rate schedule, evaluate it on the study's validation split and save it. Every file "
        "written is loaded back and must give the eager model's outputs within 1e-4 (max abs difference).",
    )
    p.add_argument("dir", help="the study directory (pdenas search --study-dir)")
    p.add_argument("--trial", default="pareto:knee",
                   help="a trial number, or pareto:best-accuracy, pareto:smallest, pareto:knee (default: the Pareto "
                   "point nearest the ideal corner once both axes are normalised)")
    p.add_argument("--epochs", type=_whole(0), default=0,
                   help="epochs of further training after the search's budget, with a fresh cosine schedule (default 0)")
    p.add_argument("--subset", type=_whole_or_all, metavar="N|all",
                   help="the training images of those epochs: N of the study's training split, or all of it (default: "
                   "the search's budget.subset); the validation split stays the search's")
    p.add_argument("--out", help="the checkpoint's path (*.pt; the other files get its stem) or a folder "
                   "(default DIR/export/trial-N/model.pt)")
    p.add_argument("--format", action="append", default=[], metavar="FORMAT",
                   help="pt, torchscript, onnx, aoti (an AOTInductor .pt2 package; compiles C++): repeat or give a comma "
                   "list; pt (the checkpoint, loadable with pdenas.load_compressed) is always written")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to train (default auto)")
    p.add_argument("--runtime", choices=RUNTIME_CHOICES,
                   help="where to measure latency, the exported model's and the original's (default: the study's "
                   "latency.runtime, with its batch size and threads)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "evaluate", help="accuracy, MACs, params and latency of an exported model on a folder of labelled images",
        description="Evaluate an exported model (model.pt, model.onnx, model.torchscript.pt or an AOTInductor .pt2) "
        "on every image of an ImageFolder folder or archive (DIR/<class>/<image>), fed as the model's own card says "
        "(its size, colour mode, mean and std, not the dataset's), with the dataset's classes matched to the "
        "model's by name; then time it, next to the original model's architecture in the same runtime.",
    )
    p.add_argument("model", help="the exported file: model.pt, model.onnx, model.torchscript.pt or model.pt2")
    p.add_argument("--dataset", required=True, help="an ImageFolder folder or .tar.gz of one (or digits, cifar10, cifar100)")
    p.add_argument("--runtime", choices=RUNTIME_CHOICES,
                   help="where to measure latency: any for model.pt (default: the runtime it was measured in at export), "
                   "the file's own for the others")
    p.add_argument("--batch-size", type=_whole(1), default=1, help="images per call when timing (default 1)")
    p.add_argument("--threads", type=_whole(1), help="intra-op threads when timing (default: torch's thread count)")
    p.add_argument("--known-classes-only", action="store_true",
                   help="leave out the dataset's classes the model does not have, instead of refusing the dataset")
    p.set_defaults(func=cmd_evaluate)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message is meant for the user: printed as one line, no traceback."""
    errors: list[type[BaseException]] = [FileNotFoundError, PermissionError]
    for module, names in (
        ("pdenas.search", ("SearchConfigError", "StudyError")),
        ("pdenas.surgery", ("NoStagesError", "PlanError", "ModelSpecError")),
        ("pdenas.data", ("DataError",)),
        ("pdenas.report", ("ReportError",)),
        ("pdenas.nn", ("GlobalLayerConfigError",)),
        ("pdenas.zoo", ("UnknownModelError",)),
    ):
        try:
            mod = __import__(module, fromlist=list(names))
        except ImportError:
            continue
        errors += [getattr(mod, n) for n in names if hasattr(mod, n)]
    return tuple(errors)


def _show_warning(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    """pdenas' own warnings (e.g. images skipped because they do not decode) as one line each."""
    if category is UserWarning and f"{Path(__file__).parent}" in str(filename):
        err_console.print(f"pdenas: warning: {message}", highlight=False, soft_wrap=True)
    else:
        _default_show_warning(message, category, filename, lineno, file, line)


_default_show_warning = warnings.showwarning


def main(argv: Sequence[str] | None = None) -> int:
    warnings.showwarning = _show_warning
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
    warnings.filterwarnings("ignore", message=".*experimental.*", module="optuna")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except _user_errors() as err:
        err_console.print(f"pdenas: error: {err}", highlight=False, soft_wrap=True)
        return 2
    except CliError as err:
        err_console.print(f"pdenas: error: {err}", highlight=False, soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
