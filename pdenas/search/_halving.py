"""Multi-objective asynchronous successive halving (MO-ASHA: Schmucker et al., "Multi-objective
Asynchronous Successive Halving", 2021), over the images a candidate is fine-tuned on (``halving:``).

Rungs: rung 0 is reached before any fine-tuning, when the stage-wise step (:mod:`pdenas.distill`) has
assembled the candidate (``stage_rung``): scored by the assembled candidate's accuracy (``accuracy``,
BatchNorm recalibrated), or by the plan's summed stage losses (``loss``; DNA ranks candidates by exactly
that sum); rung k >= 1 after r_k = ``min_images`` * ``eta`` ** (k - 1) training images, for every r_k
below the full budget. A trial reaching a rung records its score there (:class:`RungRecord`, every entry
minimised): (-accuracy, costs), or at a ``loss`` rung 0 (summed stage loss, costs), the costs being the
objectives other than accuracy (MACs, params, latency). The rung's trials are the study's trials with a
score at that rung, one entry per plan (its latest score); they are ranked by Optuna's non-dominated
sort, within a front by NSGA-II's crowding distance (larger first), then by the plan's arrival at the
rung. With n trials at the rung (itself included), a
trial goes on when n < eta (too few to judge) or its position is below ceil(n / eta); otherwise it
stops and is told to Optuna as PRUNED, its rungs kept on the trial.

Asynchronous: each decision is made from what the storage holds when the trial gets to the rung, under
a lock shared by every worker of the study (a PostgreSQL advisory lock on a storage server, a file lock
in the study directory otherwise), so two workers reaching a rung at once each see the other.

Promotion: as more trials reach a rung, a trial stopped there may rank in the top 1/eta after all. Each
worker, before it samples a new plan, queues every such trial once (:func:`promote_stopped`, under the
same lock; a queued promotion names the trial it continues, ``promoted_from``, and no trial is promoted
twice). A trial whose plan an earlier trial stopped with (a promotion, or the sampler proposing the plan
again) takes over that trial's rungs, is judged again at the rung it stopped at with the rung's trials
as they are now, and when it goes on continues training from the checkpoint the earlier trial left in
``<study dir>/halving`` (on another machine: trained again up to there, the same run).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
from filelock import FileLock
from optuna.trial import TrialState

from .._optuna import crowding_distances, nondomination_ranks
from ._config import HalvingConfig, SearchConfig
from ._context import SearchContext, plan_key
from ._record import RungRecord, TrialRecord
from ._storage import setup_lock
from ._study import StudyLocation

__all__ = ["HALVING_DIR", "Rungs", "Standing", "promote_stopped", "rank", "rung_entries", "rung_images", "standing", "start_rungs"]

HALVING_DIR = "halving"  # in the study directory: the training state of trials stopped at a rung


def rung_images(config: HalvingConfig, full: int) -> list[int]:
    """The training rungs' image counts, r_1 = ``min_images``, r_k = r_1 * eta ** (k - 1), below ``full``
    (the images the budget trains on)."""
    out: list[int] = []
    images = float(config.min_images)
    while round(images) < full:
        out.append(int(round(images)))
        images *= config.eta
    return out


def rank(scores: Sequence[Sequence[float]]) -> list[int]:
    """Each point's position (0 best) when sorted by non-dominated front, then by crowding distance
    within its front (larger first), then by index (earlier first); every column minimised."""
    points = np.asarray(scores, dtype=float).reshape(len(scores), -1)
    fronts = nondomination_ranks(points) if len(points) else []
    crowding = [0.0] * len(points)
    for front in set(fronts):
        members = [i for i, f in enumerate(fronts) if f == front]
        for i, distance in zip(members, crowding_distances(points[members])):
            crowding[i] = distance
    order = sorted(range(len(points)), key=lambda i: (fronts[i], -crowding[i], i))
    positions = [0] * len(points)
    for position, i in enumerate(order):
        positions[i] = position
    return positions


@dataclass(frozen=True)
class Standing:
    """Where a trial stands at a rung: its ``position`` (0 best) among ``of`` trials, and whether that
    is good enough to go on (n < eta, or position < ceil(n / eta))."""

    position: int
    of: int
    go_on: bool


def standing(entries: dict[str, tuple[int, tuple[float, ...]]], key: str, eta: float) -> Standing:
    """The standing of plan ``key`` among ``entries`` (plan key -> (trial number, score) at one rung)."""
    keys = sorted(entries, key=lambda k: entries[k][0])  # by trial number: ties go to the earlier trial
    positions = rank([entries[k][1] for k in keys])
    position, n = positions[keys.index(key)], len(keys)
    return Standing(position, n, n < eta or position < math.ceil(n / eta))


def rung_entries(records: Sequence[TrialRecord], rung: int) -> dict[str, tuple[int, tuple[float, ...]]]:
    """The plans at ``rung``: per plan, the number of its first trial there (its arrival: ties go to the
    earlier arrival) and its latest trial's score (queued trials and the original model's trial left out).

    The arrival, not the latest trial's number: a plan promoted or proposed again is judged in a new
    trial, and if that moved it behind its ties, the rung would stop what the promotion let through, and
    then promote it again, for ever."""
    entries: dict[str, tuple[int, tuple[float, ...]]] = {}
    for record in sorted(records, key=lambda r: r.number):
        if record.reference or record.plan is None or not record.rungs or record.state == TrialState.WAITING:
            continue
        for entry in record.rungs:
            if entry.rung == rung:
                key = plan_key(record.plan)
                entries[key] = (entries[key][0] if key in entries else record.number, entry.score)
    return entries


@contextlib.contextmanager
def halving_lock(storage: optuna.storages.BaseStorage, location: StudyLocation) -> Iterator[None]:
    """The lock every rung decision and promotion of the study is made under: PostgreSQL's advisory
    lock on a storage server (workers on many machines), else a file lock in the study directory."""
    if location.storage_url is not None and location.storage_url.startswith("postgresql"):
        with setup_lock(storage, f"{location.study_name}:halving"):
            yield
        return
    location.directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(location.directory / "halving.lock")):
        yield


@dataclass
class Rungs:
    """One trial's successive halving: the rungs still ahead and the decision at each
    (:meth:`decide`, which records the rung on the trial). ``checkpoint``: its training state."""

    study: optuna.Study
    trial: optuna.Trial
    location: StudyLocation
    storage: optuna.storages.BaseStorage
    config: SearchConfig
    key: str  # the plan
    costs: tuple[float, ...]  # the objectives other than accuracy, minimised
    training: list[int]  # image counts of rungs 1, 2, ...
    checkpoint: Path
    reached: list[RungRecord] = field(default_factory=list)
    stopped: Standing | None = None  # set when a decision stopped the trial

    @property
    def stage_rung_pending(self) -> str | None:
        """How rung 0 scores this trial (``accuracy`` or ``loss``), None when it has no rung 0 ahead."""
        mode = self.config.halving.stage_rung
        return mode if mode != "off" and self.config.stagewise.enabled and not self.reached else None

    def pending(self) -> list[tuple[int, int]]:
        """(rung, images) of the training rungs not reached yet."""
        done = max((r.rung for r in self.reached), default=0)
        return [(k, images) for k, images in enumerate(self.training, start=1) if k > done]

    def decide(self, rung: int, images: int, *, accuracy: float | None = None, stage_loss: float | None = None) -> bool:
        """Record reaching ``rung`` with this score, rank it among the rung's trials; True: go on."""
        first = stage_loss if accuracy is None else -accuracy
        score = (float(first), *self.costs)  # type: ignore[arg-type]
        with halving_lock(self.storage, self.location):
            records = [TrialRecord.from_trial(t) for t in self.study.get_trials(deepcopy=False)]
            entries = rung_entries([r for r in records if r.number != self.trial.number], rung)
            arrival = entries[self.key][0] if self.key in entries else self.trial.number  # an earlier trial of the plan got here first
            entries[self.key] = (arrival, score)
            where = standing(entries, self.key, self.config.halving.eta)
            self.reached.append(RungRecord(rung=rung, images=images, score=score, go_on=where.go_on, position=where.position,
                                           of=where.of, accuracy=accuracy, stage_loss=stage_loss))
            TrialRecord.write(self.trial, rungs=self.reached)
        if not where.go_on:
            self.stopped = where
        return where.go_on

    def rejudge(self) -> bool:
        """Judge again, with the rung's trials as they are now, the rung an earlier trial of this plan
        stopped at (its score taken over); True: go on."""
        last = self.reached.pop()
        return self.decide(last.rung, last.images, accuracy=last.accuracy, stage_loss=last.stage_loss)

    def failure(self) -> str:
        assert self.stopped is not None
        last = self.reached[-1]
        where = "the stage-wise rung (rung 0, before fine-tuning)" if last.rung == 0 else f"rung {last.rung} ({last.images:,} images)"
        return f"stopped by successive halving at {where}: place {self.stopped.position + 1} of {self.stopped.of}"


def start_rungs(study: optuna.Study, trial: optuna.Trial, ctx: SearchContext, plan_text_key: str,
                costs: tuple[float, ...], storage: optuna.storages.BaseStorage) -> Rungs:
    """The successive halving of ``trial`` (plan ``plan_text_key``): fresh, or taking over the rungs of the
    latest earlier trial of the same plan that stopped or died at a rung (see the module docstring)."""
    assert ctx.location is not None
    full = ctx.config.budget.epochs * len(ctx.data.train_y)  # type: ignore[attr-defined]
    name = hashlib.sha256(plan_text_key.encode()).hexdigest()[:20]
    rungs = Rungs(study, trial, ctx.location, storage, ctx.config, plan_text_key, costs, rung_images(ctx.config.halving, full),
                  ctx.location.directory / HALVING_DIR / f"{name}.pt")
    earlier = [r for r in map(TrialRecord.from_trial, study.get_trials(deepcopy=False, states=(TrialState.PRUNED, TrialState.FAIL)))
               if r.number < trial.number and r.rungs and r.plan is not None and plan_key(r.plan) == plan_text_key]
    if earlier:
        rungs.reached = list(earlier[-1].rungs or ())
    return rungs


def promote_stopped(study: optuna.Study, storage: optuna.storages.BaseStorage, location: StudyLocation, eta: float) -> list[int]:
    """Queue, once each, the trials stopped at a rung that the rung's trials now rank in their top 1/eta;
    the numbers of the trials promoted."""
    promoted: list[int] = []
    with halving_lock(storage, location):
        trials = study.get_trials(deepcopy=False)
        records = [TrialRecord.from_trial(t) for t in trials]
        claimed = {r.promoted_from for r in records if r.promoted_from is not None}
        latest: dict[str, TrialRecord] = {}
        for record in records:
            if record.plan is not None and not record.reference:
                latest[plan_key(record.plan)] = record  # trials come in number order
        by_number = {t.number: t for t in trials}
        for key, record in latest.items():
            stop = record.stopped_at
            if stop is None or record.number in claimed:
                continue
            if standing(rung_entries(records, stop.rung), key, eta).go_on:
                study.enqueue_trial(by_number[record.number].params, user_attrs=TrialRecord.attrs(promoted_from=record.number))
                promoted.append(record.number)
    return promoted
