"""What a pdenas study records in Optuna, as typed records: the only code that reads or writes pdenas'
Optuna user attributes.

:class:`TrialRecord` is one trial as pdenas sees it (its plan, costs, accuracy, times, whether it is the
original model, why it failed, ...), built with :meth:`TrialRecord.from_trial` from any Optuna trial.
A running trial's fields are written with :meth:`TrialRecord.write` (one or more fields at a time), a
queued trial's with :meth:`TrialRecord.attrs`. :class:`StudyRecord` is the study's own record: the
resolved configuration, the versions that created it, the layout format and the original model's
figures (:class:`OriginalModel`).

Each recorded field names its user attribute and how to read it back (``_recorded``), so adding a field
is one line here and touches no reader, e.g. per-stage results
``stages: dict[str, StageRecord] | None = _recorded("stages", _stage_map)`` with a decoder that returns
None for anything else (tuples are stored as lists, dataclasses as mappings). Values that are not what
the field expects (a study written by another tool) read as missing, never as an error. The layout
(:data:`FORMAT_VERSION`) is that of pdenas 0.1.0: a study folder written by it opens unchanged, and
:meth:`StudyRecord.search_config` reads its configuration as what it was (no stage-wise step).

On a shared storage (``--storage``) the original model's trained weights travel with the study: a small
companion study (``<study name>.original-weights``) holds them, so that workers on other machines
compress from the very weights trial 0 trained, and reading the study's trials never transfers them.

Objective values are in the order of the configuration's ``objectives`` (also the study's metric names),
e.g. ``["accuracy", "macs"]`` with directions ``["maximize", "minimize"]``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..surgery import CompressionPlan, PlanError, StagePlan
from ._config import SearchConfig, StagewiseConfig

__all__ = ["FORMAT_VERSION", "OriginalModel", "RungRecord", "StageRecord", "StudyRecord", "TrialRecord", "pareto_trials"]

FORMAT_VERSION = 1

# study user attributes
_CONFIG = "pdenas.config"
_VERSIONS = "pdenas.versions"
_FORMAT = "pdenas.format"
_ORIGINAL = "pdenas.original"
_ORIGINAL_KEYS = ("params", "macs", "conv_macs", "latency_ms", "stage_macs")
_WEIGHTS = "pdenas.original_weights"  # in the companion study of a shared storage
_WEIGHTS_STUDY = "{}.original-weights"

# what each objective reads from a record
_MEASURED = {"accuracy": "accuracy", "macs": "macs", "params": "params", "latency": "latency_ms", "conv_macs": "conv_macs"}


# ------------------------------------------------------------------------------------ decoding


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) else None


def _text(value: Any) -> str | None:
    return " ".join(value.split()) if isinstance(value, str) and value.strip() else None


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _mapping(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


def _pair(value: Any) -> tuple[int, int] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_integer(v) is not None for v in value):
        return (int(value[0]), int(value[1]))
    return None


def _int_map(value: Any) -> dict[str, int] | None:
    if not isinstance(value, Mapping):
        return None
    decoded = {str(k): _integer(v) for k, v in value.items()}
    return None if any(v is None for v in decoded.values()) else decoded  # type: ignore[return-value]


def _stage_map(value: Any) -> dict[str, StageRecord] | None:
    if not isinstance(value, Mapping):
        return None
    decoded = {str(k): StageRecord.from_dict(v) for k, v in value.items()}
    return None if any(v is None for v in decoded.values()) else decoded  # type: ignore[return-value]


def _rung_list(value: Any) -> tuple[RungRecord, ...] | None:
    if not isinstance(value, (list, tuple)):
        return None
    decoded = tuple(RungRecord.from_dict(v) for v in value)
    return None if any(v is None for v in decoded) else decoded  # type: ignore[return-value]


def _recorded(key: str, decode: Callable[[Any], Any], default: Any = None) -> Any:
    """A field stored as the trial user attribute ``key``, read back with ``decode`` (None: not recorded)."""
    return field(default=default, metadata={"key": key, "decode": decode})


def _encode(value: Any) -> Any:
    """A field's value as JSON-ready data (what every Optuna storage keeps)."""
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _encode(dataclasses.asdict(value))
    return value


# -------------------------------------------------------------------------------------- trials


@dataclass(frozen=True)
class StageRecord:
    """One stage of a trial's candidate after the stage-wise step (:mod:`pdenas.distill`): which stage
    variant it was assembled from and what the step gave for it. ``loss`` is the normalised MSE on the
    original's held-out stage features (1.0: as good as each channel's mean), ``initial_loss`` the same
    before the step (kept blocks with the original's weights, the Global layer at its init); ``mse`` the
    raw figure; ``reused``: read from the study's variant store rather than trained by this trial;
    ``train_time``: seconds of the step when it ran (for a reused variant, what its training took);
    ``macs``: honest MACs per image of the stage as assembled (kept blocks + Global layer)."""

    key: str
    keep: int
    global_layer: dict[str, Any] | None  # GlobalLayerConfig.to_dict(), or None: blocks only
    loss: float
    mse: float
    initial_loss: float
    reused: bool
    train_time: float
    macs: int | None = None

    @property
    def plan(self) -> StagePlan:
        """The stage's plan (keep + Global layer)."""
        return StagePlan.from_dict({"keep": self.keep, "global_layer": self.global_layer})

    def describe(self) -> str:
        """``keep 1 + Global K=1 dt=0.2``."""
        try:
            return self.plan.describe()
        except PlanError:
            return f"keep {self.keep}" + (" + Global" if self.global_layer is not None else "")

    @classmethod
    def from_dict(cls, data: Any) -> "StageRecord | None":
        """The record stored as ``data``; None when it is not one."""
        if not isinstance(data, Mapping):
            return None
        numbers = {name: _number(data.get(name)) for name in ("loss", "mse", "initial_loss", "train_time")}
        key, keep, reused = _text(data.get("key")), _integer(data.get("keep")), _flag(data.get("reused"))
        glob = data.get("global_layer")
        if key is None or keep is None or reused is None or any(v is None for v in numbers.values()) or not (
            glob is None or isinstance(glob, Mapping)
        ):
            return None
        return cls(key=key, keep=keep, global_layer=None if glob is None else dict(glob), reused=reused,
                   macs=_integer(data.get("macs")), **numbers)  # type: ignore[arg-type]


@dataclass(frozen=True)
class RungRecord:
    """One rung of successive halving a trial reached (:mod:`pdenas.search._halving`). Rung 0 is the
    stage-wise rung (``images`` 0: no fine-tuning yet), scored by ``accuracy``, the assembled candidate's,
    or by ``stage_loss``, the plan's summed stage-wise losses (``halving.stage_rung``); rung k >= 1 comes
    after ``images`` training images, scored by ``accuracy`` there.
    ``score``: what the rung ranks, every entry minimised (the summed loss or minus the accuracy, then
    the costs among the objectives); ``position``: its place among the ``of`` trials at the rung when
    it got there (0 best); ``go_on``: whether it went on training (False: stopped here)."""

    rung: int
    images: int
    score: tuple[float, ...]
    go_on: bool
    position: int
    of: int
    accuracy: float | None = None
    stage_loss: float | None = None

    @classmethod
    def from_dict(cls, data: Any) -> "RungRecord | None":
        if not isinstance(data, Mapping):
            return None
        rung, images, position, of = (_integer(data.get(k)) for k in ("rung", "images", "position", "of"))
        score, go_on = data.get("score"), _flag(data.get("go_on"))
        if None in (rung, images, position, of, go_on) or not isinstance(score, (list, tuple)) or any(_number(v) is None for v in score):
            return None
        return cls(rung=rung, images=images, score=tuple(float(v) for v in score), go_on=go_on, position=position,  # type: ignore[arg-type]
                   of=of, accuracy=_number(data.get("accuracy")), stage_loss=_number(data.get("stage_loss")))  # type: ignore[arg-type]


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a pdenas study; None where a quantity was not recorded.

    From Optuna: ``number``, ``state``, ``values`` (in the order of the objectives) and ``constraints``
    (name -> value - limit, feasible when <= 0). Recorded by the search, for every trial that got as far
    as building its candidate: the rest. An infeasible candidate is recorded with its costs, untrained
    (``accuracy`` None, its accuracy objective a placeholder 0.0); the original model's trial
    (``reference``) is trained even when it breaks a constraint.
    """

    number: int
    state: TrialState = TrialState.RUNNING
    values: tuple[float, ...] | None = None
    constraints: dict[str, float] = field(default_factory=dict)

    plan: dict[str, Any] | None = _recorded("plan", _mapping)  # CompressionPlan.to_dict()
    plan_text: str = _recorded("plan_text", _text, "")  # the plan in words, every stage of the model
    accuracy: float | None = _recorded("accuracy", _number)  # validation accuracy in [0, 1]
    macs: int | None = _recorded("macs", _integer)  # per image, honest (the Global layers' arithmetic counted)
    conv_macs: int | None = _recorded("conv_macs", _integer)  # as fvcore and the paper count them
    params: int | None = _recorded("params", _integer)
    latency_ms: float | None = _recorded("latency_ms", _number)  # median latency of one call (a batch); pdenas 0.1.0: eager, batch 1
    latency_runtime: str | None = _recorded("latency_runtime", _text)  # where: torch, torchscript, onnxruntime or aoti
    latency_batch_size: int | None = _recorded("latency_batch_size", _integer)  # images per call
    latency_threads: int | None = _recorded("latency_threads", _integer)  # intra-op threads
    latency_time: float | None = _recorded("latency_time", _number)  # seconds measuring it (writing the file, loading, timing)
    train_time: float | None = _recorded("train_time", _number)  # seconds
    eval_time: float | None = _recorded("eval_time", _number)
    wall_time: float | None = _recorded("wall_time", _number)  # the whole trial
    epochs: int | None = _recorded("epochs", _integer)  # epochs trained
    seed: int | None = _recorded("seed", _integer)  # the training seed
    reference: bool = _recorded("reference", _flag, False)  # the original model's trial (the identity plan)
    feasible: bool = _recorded("feasible", _flag, True)  # within every constraint
    reused_from: int | None = _recorded("reused_from", _integer)  # the trial whose training an identical plan reused
    retry_of: int | None = _recorded("retry_of", _integer)  # the trial this one re-runs (a crash, a stale worker)
    failure: str | None = _recorded("failure", _text)  # one line, on FAIL (and pruned) trials
    worker: str | None = _recorded("worker", _text)  # "host:pid" of the process that ran it
    progress: tuple[int, int] | None = _recorded("progress", _pair)  # (epochs done, epochs) while training
    stages: dict[str, StageRecord] | None = _recorded("stages", _stage_map)  # per distilled stage, forward order
    initial_accuracy: float | None = _recorded("initial_accuracy", _number)  # assembled, BN recalibrated, before fine-tuning
    fine_tuning_discarded: bool = _recorded("fine_tuning_discarded", _flag, False)  # fine-tuning lowered the accuracy: assembled weights kept
    stagewise_time: float | None = _recorded("stagewise_time", _number)  # seconds: stage features + variants + assembly
    weights_fingerprint: str | None = _recorded("weights_fingerprint", _text)  # the original's trial: its trained weights
    rungs: tuple[RungRecord, ...] | None = _recorded("rungs", _rung_list)  # successive halving: the rungs it reached
    promoted_from: int | None = _recorded("promoted_from", _integer)  # the trial stopped at a rung that this one continues

    @classmethod
    def from_trial(cls, trial: FrozenTrial | optuna.Trial) -> "TrialRecord":
        """The record of ``trial`` (a finished one, or a running ``optuna.Trial``)."""
        attrs = trial.user_attrs
        recorded: dict[str, Any] = {}
        for f in _FIELDS:
            value = f.metadata["decode"](attrs[f.metadata["key"]]) if f.metadata["key"] in attrs else None
            if value is not None:
                recorded[f.name] = value
        constraints = {str(k): float(v) for k, v in trial.constraints.items()}
        values = getattr(trial, "values", None)
        record = cls(
            number=trial.number,
            state=getattr(trial, "state", TrialState.RUNNING),
            values=None if values is None else tuple(float(v) for v in values),
            constraints=constraints,
            **recorded,
        )
        updates: dict[str, Any] = {}
        if record.feasible and any(v > 0 for v in constraints.values()):  # Optuna's rule wins
            updates["feasible"] = False
        if not record.plan_text and record.plan is not None:
            updates["plan_text"] = _describe(record.plan)
        if record.state == TrialState.FAIL and record.failure is None:
            updates["failure"] = "failed without a recorded reason"
        return dataclasses.replace(record, **updates) if updates else record

    # ---- writing

    @staticmethod
    def write(trial: optuna.Trial, **fields: Any) -> None:
        """Record ``fields`` (names of this class's recorded fields) on a running trial."""
        for key, value in TrialRecord.attrs(**fields).items():
            trial.set_user_attr(key, value)

    @staticmethod
    def write_to_storage(storage: optuna.storages.BaseStorage, trial_id: int, **fields: Any) -> None:
        """Record ``fields`` on the trial ``trial_id`` of ``storage`` (one this process does not run)."""
        for key, value in TrialRecord.attrs(**fields).items():
            storage.set_trial_user_attr(trial_id, key, value)

    @staticmethod
    def attrs(**fields: Any) -> dict[str, Any]:
        """``fields`` as Optuna user attributes (for ``enqueue_trial`` and ``create_trial``); None is left out."""
        out: dict[str, Any] = {}
        for name, value in fields.items():
            if name not in _KEYS:
                raise TypeError(f"TrialRecord has no recorded field {name!r}; recorded fields: {', '.join(_KEYS)}")
            if value is not None:
                out[_KEYS[name]] = _encode(value)
        return out

    @staticmethod
    def key(name: str) -> str:
        """The user attribute that holds the recorded field ``name`` (for column names of Optuna's dataframe)."""
        return _KEYS[name]

    def retry_attrs(self) -> dict[str, Any]:
        """The user attributes of a trial that re-runs this one: what it retries, whether it is the original,
        the stopped trial it continues."""
        return TrialRecord.attrs(retry_of=self.number, reference=True if self.reference else None, promoted_from=self.promoted_from)

    def requeue_attrs(self) -> dict[str, Any]:
        """The user attributes of this (queued) trial put back in the queue: what defines it, not its results."""
        return TrialRecord.attrs(retry_of=self.retry_of, reference=True if self.reference else None, promoted_from=self.promoted_from)

    # ---- reading

    @property
    def complete(self) -> bool:
        return self.state == TrialState.COMPLETE

    @property
    def stopped_at(self) -> RungRecord | None:
        """The rung successive halving stopped this (pruned) trial at; None when it was not stopped."""
        if self.state != TrialState.PRUNED or not self.rungs or self.rungs[-1].go_on:
            return None
        return self.rungs[-1]

    @property
    def finished(self) -> bool:
        """Counts towards the study's trial target: completed, or stopped at a rung."""
        return self.complete or self.stopped_at is not None

    def measured(self, name: str) -> float | None:
        """The recorded quantity behind an objective or cost: accuracy, macs, params, latency, conv_macs."""
        value = getattr(self, _MEASURED[name]) if name in _MEASURED else None
        return None if value is None else float(value)

    def objective(self, name: str, objectives: Sequence[str]) -> float | None:
        """The value Optuna holds for objective ``name`` (None: not an objective, or no values)."""
        if self.values is None or name not in objectives:
            return None
        return self.values[list(objectives).index(name)]


_FIELDS = tuple(f for f in dataclasses.fields(TrialRecord) if "key" in f.metadata)
_KEYS = {f.name: f.metadata["key"] for f in _FIELDS}


def _describe(plan: Mapping[str, Any]) -> str:
    """A stored plan in words, for trials that did not record them (``CompressionPlan.describe``)."""
    try:
        return CompressionPlan.from_dict(plan).describe()
    except PlanError:
        return json.dumps(dict(plan), sort_keys=True, default=str)


# --------------------------------------------------------------------------------------- study


@dataclass(frozen=True)
class OriginalModel:
    """The model before compression: its accuracy from its completed trial (the completed one marked
    ``reference``: a failed attempt that was retried does not count); its costs from that trial, else as
    measured when the study was created."""

    trial_number: int | None = None
    accuracy: float | None = None
    macs: float | None = None
    params: float | None = None
    conv_macs: float | None = None
    latency_ms: float | None = None
    stage_macs: dict[str, int] | None = None  # honest MACs per image of each searched stage
    weights_fingerprint: str | None = None  # of the weights its trial trained (no ``weights`` given)

    def cost(self, name: str) -> float | None:
        """``macs``, ``params``, ``conv_macs`` or ``latency`` (milliseconds)."""
        return {"macs": self.macs, "params": self.params, "latency": self.latency_ms, "conv_macs": self.conv_macs}.get(name)


@dataclass(frozen=True)
class StudyRecord:
    """A pdenas study's own record: its resolved configuration (``SearchConfig.to_dict()``), the versions
    of the process that created it, the layout format and the original model's figures."""

    config: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=dict)
    format: int | None = None
    original: OriginalModel = field(default_factory=OriginalModel)
    metric_names: tuple[str, ...] | None = None

    @classmethod
    def from_study(cls, study: optuna.Study, records: Sequence[TrialRecord] | None = None) -> "StudyRecord":
        """The record of ``study``. ``records``: its trials' records, when already read (the original
        model's figures come from them; ``[]`` when only the configuration is wanted: no trial is read)."""
        attrs = study.user_attrs
        if records is None:
            records = [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False)]
        versions = _mapping(attrs.get(_VERSIONS)) or {}
        return cls(
            config=_mapping(attrs.get(_CONFIG)),
            versions={str(k): str(v) for k, v in versions.items()},
            format=_integer(attrs.get(_FORMAT)),
            original=_original(_mapping(attrs.get(_ORIGINAL)) or {}, records),
            metric_names=None if study.metric_names is None else tuple(study.metric_names),
        )

    @staticmethod
    def write(study: optuna.Study, *, config: dict[str, Any], versions: dict[str, str], original: dict[str, Any]) -> None:
        """Record a new study's configuration, versions, format and the original model's costs
        (``original``: params, macs, conv_macs, latency_ms, stage_macs)."""
        study.set_user_attr(_FORMAT, FORMAT_VERSION)
        study.set_user_attr(_CONFIG, _encode(config))
        study.set_user_attr(_VERSIONS, dict(versions))
        study.set_user_attr(_ORIGINAL, {key: original.get(key) for key in _ORIGINAL_KEYS})

    def search_config(self) -> SearchConfig | None:
        """The study's configuration as a :class:`SearchConfig`. A configuration stored before stage-wise
        distillation existed (pdenas 0.1.0, no ``stagewise`` key) reads as what it was: no stage-wise step."""
        if self.config is None:
            return None
        config = SearchConfig.from_dict(self.config)
        if "stagewise" not in self.config:
            config = dataclasses.replace(config, stagewise=StagewiseConfig(enabled=False))
        return config

    @staticmethod
    def write_original_weights(study: optuna.Study, storage: optuna.storages.BaseStorage, data: bytes, fingerprint: str) -> None:
        """Keep the original's trained weights (``data``: the file's bytes) in ``storage``, beside ``study``."""
        keeper = optuna.create_study(storage=storage, study_name=_WEIGHTS_STUDY.format(study.study_name), load_if_exists=True)
        keeper.set_user_attr(_WEIGHTS, {"fingerprint": fingerprint, "data": base64.b64encode(data).decode("ascii")})

    @staticmethod
    def read_original_weights(study: optuna.Study, storage: optuna.storages.BaseStorage) -> tuple[bytes, str] | None:
        """The original's trained weights kept in ``storage`` (the file's bytes, their fingerprint), or None."""
        try:
            keeper = optuna.load_study(storage=storage, study_name=_WEIGHTS_STUDY.format(study.study_name))
        except KeyError:
            return None
        stored = _mapping(keeper.user_attrs.get(_WEIGHTS))
        if stored is None or not isinstance(stored.get("data"), str) or _text(stored.get("fingerprint")) is None:
            return None
        return base64.b64decode(stored["data"]), str(stored["fingerprint"])

    @staticmethod
    def write_format(study: optuna.Study, version: int) -> None:
        """Overwrite the layout format (tests of studies written by another version)."""
        study.set_user_attr(_FORMAT, version)

    @property
    def objectives(self) -> tuple[str, ...] | None:
        """Objective names in the order of the trials' values: the configuration's, else the metric names."""
        names = self.config.get("objectives") if self.config else None
        if not names:
            names = self.metric_names
        return None if not names else tuple(str(name) for name in names)

    @property
    def model(self) -> str:
        """The model the study compresses ("" when the configuration does not say)."""
        model = self.config.get("model") if self.config else None
        return "" if model is None else str(model)


def _original(stored: Mapping[str, Any], records: Sequence[TrialRecord]) -> OriginalModel:
    reference = next((r for r in sorted(records, key=lambda r: r.number) if r.reference and r.complete), None)

    def measured(name: str, stored_key: str) -> float | None:
        value = reference.measured(name) if reference is not None else None
        return value if value is not None else _number(stored.get(stored_key))

    return OriginalModel(
        trial_number=None if reference is None else reference.number,
        accuracy=None if reference is None else reference.accuracy,
        macs=measured("macs", "macs"),
        params=measured("params", "params"),
        conv_macs=measured("conv_macs", "conv_macs"),
        latency_ms=measured("latency", "latency_ms"),
        stage_macs=_int_map(stored.get("stage_macs")),
        weights_fingerprint=None if reference is None else reference.weights_fingerprint,
    )


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The study's Pareto set: Optuna's ``study.best_trials`` (completed trials within every constraint;
    the search records a constraint on every trial of a constrained study), by trial number."""
    return sorted(study.best_trials, key=lambda t: t.number)
