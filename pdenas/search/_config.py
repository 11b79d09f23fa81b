"""A search's configuration, the YAML file as a whole (:class:`SearchConfig`, ``search_spaces/*.yaml``):
the model and data, its ``space:`` section (:class:`SearchSpace`, what the sampler chooses for each
stage), its ``budget:`` section (:class:`pdenas.train.TrainRecipe`, how each candidate is trained), the
objectives, constraints and sampler, and its ``latency:`` section (:class:`LatencyConfig`, the runtime,
batch size and threads latency is measured with).

Every key is documented in ``search_spaces/README.md``. A wrong file is refused with one line that
names the key (and the closest valid key), the wrong type, the value out of range or the empty range;
nothing starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from ..cost import RUNTIMES
from ..distill import StageRecipe
from ..nn import GlobalLayerConfig, GlobalLayerConfigError
from ..train import TrainRecipe

__all__ = [
    "OBJECTIVES",
    "Constraints",
    "FloatRange",
    "HalvingConfig",
    "IntRange",
    "LatencyConfig",
    "Normalization",
    "SamplerConfig",
    "SearchConfig",
    "SearchConfigError",
    "SearchSpace",
    "StagewiseConfig",
    "check_halving",
]

# the objectives a search may optimise, with their directions
OBJECTIVES = {"accuracy": "maximize", "macs": "minimize", "params": "minimize", "latency": "minimize"}
MAX_SEED = 2**31  # seeds (of the search and the sampler) lie in [0, MAX_SEED): numpy's and torch's range, with room per worker
# budget.distillation when the file does not set it: from a trained original the user gives, the
# candidates learn from its logits; an original that trial 0 trains on the same short budget is no
# better a teacher than its students become (digits, default.yaml: -0.9 points on average at 0.5)
DISTILLATION_WITH_WEIGHTS = 0.7


class SearchConfigError(ValueError):
    """The search configuration is wrong; the message names the key and how to fix it."""


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int | None = None  # None: up to the stage's m


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False
    step: float | None = None  # a grid low, low + step, ..., high (Optuna's suggest_float step), so that values repeat


@dataclass(frozen=True)
class SearchSpace:
    """The ``space:`` section: what the sampler may choose for a stage (or once for all stages when ``shared``)."""

    stages: Union[str, list[str]] = "all"  # "all" or stage names
    shared: bool = False
    global_layer: list[bool] = field(default_factory=lambda: [True, False])
    keep: IntRange = field(default_factory=lambda: IntRange(1, None))
    iterations: IntRange = field(default_factory=lambda: IntRange(1, 6))
    dt: FloatRange = field(default_factory=lambda: FloatRange(0.05, 0.5, True))
    diffusion: list[str] = field(default_factory=lambda: ["learned"])
    residual: list[bool] = field(default_factory=lambda: [False])
    global_init: list[str] = field(default_factory=lambda: ["identity"])  # GlobalLayerConfig.init choices; identity won the CIFAR-10 ablation


@dataclass(frozen=True)
class StagewiseConfig:
    """The ``stagewise:`` section: before its fine-tuning, each candidate is assembled from stages trained
    to reproduce the original's stages on its own stage inputs (:mod:`pdenas.distill`); each stage variant
    is trained once per study and reused by every trial and worker that needs it."""

    enabled: bool = True  # false: the plan applied to the original as it is, then fine-tuned (the ablation)
    images: int = 10_000  # training images whose stage inputs and outputs are recorded (all when fewer)
    val_images: int = 1_000  # validation images the stage losses are measured on
    recipe: StageRecipe = field(default_factory=StageRecipe)


@dataclass(frozen=True)
class Normalization:
    """The ``normalize:`` section: the per-channel mean and std (of pixel values scaled to [0, 1]) the
    original model was trained with, so that the search feeds it what it learned on. Without it: those
    of the ``weights`` file's model card (a checkpoint of ``pdenas.save_compressed`` or ``pdenas export``),
    else the training split's own statistics."""

    mean: list[float]
    std: list[float]


@dataclass(frozen=True)
class Constraints:
    """Upper bounds; a number > 1 is absolute, a number in (0, 1] a fraction of the original model's."""

    max_macs: float | None = None
    max_params: float | None = None


SAMPLERS = ("tpe", "nsga2", "gp", "random")
STAGE_RUNGS = ("accuracy", "loss", "off")  # halving.stage_rung


@dataclass(frozen=True)
class SamplerConfig:
    """The ``sampler:`` section: which Optuna sampler proposes plans (:func:`pdenas.search.make_sampler`)."""

    name: str = "tpe"  # tpe (multivariate, grouped) | nsga2 | gp (Optuna's GPSampler: log EHVI) | random
    seed: int | None = None  # None: the search seed
    startup_trials: int = 8  # random plans before TPE's or GP's model is used
    population: int = 50  # NSGA-II's population size


@dataclass(frozen=True)
class HalvingConfig:
    """The ``halving:`` section: multi-objective asynchronous successive halving (MO-ASHA, Schmucker et
    al. 2021) over the images a candidate is fine-tuned on. Rung k is reached after
    ``min_images * eta**k`` images (rungs below the full budget); there a trial goes on only while the
    rung's trials rank it in their top 1/eta by non-dominated sorting (ties within a front by crowding
    distance). ``stage_rung``: rung 0, after the stage-wise step and before any fine-tuning (with
    ``stagewise.enabled``), scored by ``accuracy``, the assembled candidate's accuracy (BatchNorm
    recalibrated: one pass over the validation split), or by ``loss``, the plan's summed stage-wise losses
    (DNA's ranking, free); ``off``: no rung 0. On CIFAR-10 ``resnet32`` the assembled accuracy ranked plans
    by their final accuracy far better than the summed losses, which ranked them worse than MACs alone
    (benchmarks/RESULTS.md, issue 15), so ``accuracy`` is the default. ``true`` / ``false`` from earlier
    files read as ``loss`` / ``off``. Off by default."""

    enabled: bool = False
    min_images: int = 2_000  # r_min: the first training rung
    eta: float = 3.0  # reduction factor: a rung keeps the top 1/eta
    stage_rung: str | bool = "accuracy"  # accuracy | loss | off (see above)

    def __post_init__(self) -> None:
        if isinstance(self.stage_rung, bool):  # the setting's first form: true meant the summed losses
            object.__setattr__(self, "stage_rung", "loss" if self.stage_rung else "off")


@dataclass(frozen=True)
class LatencyConfig:
    """The ``latency:`` section: how the ``latency`` objective and ``measure_latency`` time a model, in the
    runtime the user deploys to (:func:`pdenas.cost.measure_latency`)."""

    runtime: str = "torch"  # torch | torchscript | onnxruntime | aoti
    batch_size: int = 1
    threads: int | None = None  # None: the worker's torch threads


@dataclass(frozen=True)
class SearchConfig:
    """The configuration file as a whole: everything one search needs besides where to store it."""

    model: str = "resnet_tiny"
    weights: str | None = None
    dataset: str = "digits"
    image_size: int | None = None
    num_classes: int | None = None  # None: from the dataset
    normalize: Normalization | None = None  # None: the weights' model card, else the training split's statistics
    trials: int = 20
    seed: int = 0
    device: str = "auto"
    measure_latency: bool = False
    space: SearchSpace = field(default_factory=SearchSpace)
    budget: TrainRecipe = field(default_factory=TrainRecipe)
    stagewise: StagewiseConfig = field(default_factory=StagewiseConfig)
    objectives: list[str] = field(default_factory=lambda: ["accuracy", "macs"])
    constraints: Constraints = field(default_factory=Constraints)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    halving: HalvingConfig = field(default_factory=HalvingConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    source: str | None = None  # the YAML file it was read from

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "SearchConfig":
        """Read a YAML search configuration; ``overrides`` (dotted keys allowed, e.g. ``budget.epochs``) win."""
        path = Path(path)
        if not path.is_file():
            raise SearchConfigError(f"search configuration file {path} does not exist: pass --config PATH to a YAML file")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or "invalid YAML"
            raise SearchConfigError(f"{path}: not valid YAML{where}: {problem}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise SearchConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
        data = {**data, "source": str(path)}
        try:
            return cls.from_dict(_apply_overrides(data, overrides))
        except SearchConfigError as err:
            raise SearchConfigError(f"{path}: {err}") from None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchConfig":
        """The configuration in ``data`` (a parsed YAML file, or a stored ``to_dict()``). A file that does not
        set ``budget.distillation`` gets :data:`DISTILLATION_WITH_WEIGHTS` when it gives ``weights``, else 0."""
        budget = data.get("budget")
        if data.get("weights") and (budget is None or (isinstance(budget, dict) and "distillation" not in budget)):
            data = {**data, "budget": {**(budget or {}), "distillation": DISTILLATION_WITH_WEIGHTS}}
        return _build(cls, data, prefix="")

    def with_overrides(self, **overrides: Any) -> "SearchConfig":
        return SearchConfig.from_dict(_apply_overrides(self.to_dict(), overrides))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> dict[str, Any]:
        """The settings that define a study: a study directory refuses a search that differs in these."""
        data = self.to_dict()
        for volatile in ("trials", "device", "source"):
            data.pop(volatile)
        return data

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[name] for name in self.objectives]

    @property
    def measures_latency(self) -> bool:
        """Whether each candidate's latency is measured (``measure_latency``, or ``latency`` an objective)."""
        return self.measure_latency or "latency" in self.objectives


# ---------------------------------------------------------------------------------------------
# building and validating


def _apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return data


def _build(cls: type, data: Any, *, prefix: str) -> Any:
    where = prefix.rstrip(".") or "the file"
    if not isinstance(data, dict):
        raise SearchConfigError(f"{where} must be a mapping of keys, got {_describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = get_type_hints(cls)
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f"; valid keys: {', '.join(fields)}"
            raise SearchConfigError(f"unknown key '{prefix}{key}'{hint}")
    values = {key: _convert(hints[key], value, f"{prefix}{key}") for key, value in data.items()}
    try:
        return cls(**values)
    except SearchConfigError:
        raise
    except (TypeError, ValueError) as err:
        message = str(err).removeprefix(f"{cls.__name__}: ")  # "StageRecipe: lr must be ..." -> "lr must be ..."
        if message.startswith("'"):  # a setting named by its key: name it by its path in the file
            raise SearchConfigError(f"'{prefix}{message[1:]}") from None
        key, _, rest = message.partition(" ")
        if key in fields and rest:  # "lr must be a number > 0" -> "'stagewise.recipe.lr' must be a number > 0"
            raise SearchConfigError(f"'{prefix}{key}' {rest}") from None
        raise SearchConfigError(f"{where}: {message}") from None


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if hint in (IntRange, FloatRange):
            return _range(hint, value, key)
        return _build(hint, value, prefix=f"{key}.")
    if origin is Union or (origin is not None and type(None) in get_args(hint)) or str(origin) == "types.UnionType":
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # X or null, and not null: X's own message says what is wrong
            return _convert(options[0], value, key)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key)
            except SearchConfigError as err:
                errors.append(err)
        expected = " or ".join(_type_name(a) for a in args)
        raise SearchConfigError(f"'{key}' must be {expected}, got {_describe(value)}")
    if origin is list:
        (item,) = get_args(hint)
        items = value if isinstance(value, list) else [value]
        if not items:
            raise SearchConfigError(f"'{key}' is an empty list: give at least one choice")
        return [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(items)]
    if hint is bool:
        if not isinstance(value, bool):
            raise SearchConfigError(f"'{key}' must be true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise SearchConfigError(f"'{key}' must be an integer, got {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return float(value)  # YAML reads 5e-4 as a string
                except ValueError:
                    pass
            raise SearchConfigError(f"'{key}' must be a number, got {_describe(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise SearchConfigError(f"'{key}' must be a string, got {_describe(value)}")
        return value
    return value


def _range(hint: type, value: Any, key: str) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = {"low": value, "high": value}
    if isinstance(value, list) and len(value) == 2:
        value = {"low": value[0], "high": value[1]}
    built = _build(hint, value, prefix=f"{key}.")
    if built.high is not None and built.high < built.low:
        raise SearchConfigError(f"'{key}' is an empty range: low={built.low} > high={built.high}")
    return built


def _validate(config: SearchConfig) -> None:
    space = config.space

    def fail(message: str) -> None:
        raise SearchConfigError(message)

    if config.trials < 1:
        fail(f"'trials' must be >= 1, got {config.trials}")
    for key, seed in (("seed", config.seed), ("sampler.seed", config.sampler.seed)):
        if seed is not None and not 0 <= seed < MAX_SEED:
            fail(f"'{key}' must be a whole number in [0, {MAX_SEED}), got {seed}")
    if config.num_classes is not None and config.num_classes < 1:
        fail(f"'num_classes' must be >= 1 (or null: the dataset's), got {config.num_classes}")
    if config.sampler.startup_trials < 0:
        fail(f"'sampler.startup_trials' must be >= 0, got {config.sampler.startup_trials}")
    if config.device not in ("auto", "cpu", "cuda") and not config.device.startswith("cuda:"):
        fail(f"'device' must be auto, cpu or cuda, got {config.device!r}")
    if config.image_size is not None and config.image_size < 4:
        fail(f"'image_size' must be >= 4, got {config.image_size}")
    norm = config.normalize
    if norm is not None and (len(norm.mean) != len(norm.std) or not all(s > 0 and math.isfinite(s) for s in norm.std)):
        fail(f"'normalize' needs one mean and one std > 0 per image channel, got mean {norm.mean}, std {norm.std}")
    if isinstance(space.stages, str) and space.stages != "all":
        fail(f"'space.stages' must be 'all' or a list of stage names, got {space.stages!r}")
    if space.keep.low < 1:
        fail(f"'space.keep.low' must be >= 1, got {space.keep.low}")
    if space.iterations.low < 1:
        fail(f"'space.iterations.low' must be >= 1, got {space.iterations.low}")
    if not space.dt.low > 0 or not math.isfinite(space.dt.high):
        fail(f"'space.dt' must lie in (0, inf), got {space.dt.low}..{space.dt.high}")
    _validate_step(space.dt, "space.dt")
    for d in space.diffusion:
        if d not in ("learned", "constant"):
            fail(f"'space.diffusion' choices must be learned or constant, got {d!r}")
    for init in space.global_init:
        try:
            GlobalLayerConfig(init=init)  # the layer's own rule for what an init is
        except GlobalLayerConfigError as err:
            fail(f"'space.global_init' choices: {err}")
    if set(space.global_init) == {"identity"} and set(space.residual) == {True}:
        fail("'space.global_init: [identity]' cannot go with 'space.residual: [true]': the identity form adds the "
             "layer's input already (y = f + a * G(f)); set residual to [false] or add random to global_init")
    for key in ("images", "val_images"):
        if getattr(config.stagewise, key) < 1:
            fail(f"'stagewise.{key}' must be >= 1, got {getattr(config.stagewise, key)}")
    if not config.objectives:
        fail("'objectives' is empty: give at least one of accuracy, macs, params, latency")
    for name in config.objectives:
        if name not in OBJECTIVES:
            close = difflib.get_close_matches(name, list(OBJECTIVES), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            fail(f"unknown objective '{name}'{hint}; choose from {', '.join(OBJECTIVES)}")
    if len(set(config.objectives)) != len(config.objectives):
        fail(f"'objectives' lists an objective twice: {config.objectives}")
    for key in ("max_macs", "max_params"):
        value = getattr(config.constraints, key)
        if value is not None and not value > 0:
            fail(f"'constraints.{key}' must be > 0 (absolute, or a fraction in (0, 1] of the original), got {value}")
    if config.sampler.name not in SAMPLERS:
        close = difflib.get_close_matches(str(config.sampler.name), SAMPLERS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        fail(f"'sampler.name' must be {', '.join(SAMPLERS[:-1])} or {SAMPLERS[-1]}, got {config.sampler.name!r}{hint}")
    if config.sampler.population < 2:
        fail(f"'sampler.population' must be >= 2 (NSGA-II's population), got {config.sampler.population}")
    if config.halving.min_images < 1:
        fail(f"'halving.min_images' must be >= 1 (images trained on before the first rung), got {config.halving.min_images}")
    if not (math.isfinite(config.halving.eta) and config.halving.eta > 1):
        fail(f"'halving.eta' must be a number > 1 (each rung keeps the top 1/eta), got {config.halving.eta}")
    if config.halving.stage_rung not in STAGE_RUNGS:
        fail(f"'halving.stage_rung' must be {', '.join(STAGE_RUNGS[:-1])} or {STAGE_RUNGS[-1]}, got {config.halving.stage_rung!r}")
    if config.latency.runtime not in RUNTIMES:
        fail(f"'latency.runtime' must be {', '.join(RUNTIMES[:-1])} or {RUNTIMES[-1]}, got {config.latency.runtime!r}")
    if config.latency.batch_size < 1:
        fail(f"'latency.batch_size' must be >= 1, got {config.latency.batch_size}")
    if config.latency.threads is not None and config.latency.threads < 1:
        fail(f"'latency.threads' must be >= 1 (or null: the worker's torch threads), got {config.latency.threads}")


def check_halving(config: SearchConfig, full: int) -> None:
    """Refuse a ``halving:`` section that cannot work, in one line naming the key."""
    if not config.halving.enabled:
        return
    if "accuracy" not in config.objectives:
        raise SearchConfigError("'halving.enabled' needs 'accuracy' among the objectives: without it no rung has anything to rank")
    if config.halving.min_images >= full:
        raise SearchConfigError(
            f"'halving.min_images' = {config.halving.min_images:,} is not below the images the budget trains on "
            f"({full:,} = budget.epochs x training images): no rung fits; lower it"
        )


def _validate_step(value: FloatRange, key: str) -> None:
    """A grid step: > 0, on a linear scale, and dividing high - low (so that high is on the grid)."""
    step = value.step
    if step is None:
        return
    if not (math.isfinite(step) and step > 0):
        raise SearchConfigError(f"'{key}.step' must be a number > 0 (or null: no grid), got {step}")
    if value.log:
        raise SearchConfigError(f"'{key}.step' needs log: false (a grid is evenly spaced); remove one of the two")
    count = (value.high - value.low) / step
    if abs(count - round(count)) > 1e-6:
        raise SearchConfigError(
            f"'{key}.step' = {step:g} does not divide high - low = {value.high - value.low:g}: "
            f"choose a step such that low + n * step = high"
        )


def _type_name(hint: Any) -> str:
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    if get_origin(hint) is list:
        return "a list"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"
