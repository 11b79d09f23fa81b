"""Compression plans: per stage, how many blocks to keep and which Global layer to add (Kag &
Saligrama, CVPR 2022, Sec. 4: keep the first block of a stage and replace the other m - 1 with one
Global layer).

A plan is plain data: it round-trips through JSON and is checked against a model's stages before
it is applied. Stages a plan does not name are left untouched.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..nn import GlobalLayerConfig, GlobalLayerConfigError
from ._stages import Stage

__all__ = ["CompressionPlan", "StagePlan", "PlanError", "PLAN_FORMAT_VERSION"]

PLAN_FORMAT_VERSION = 1
_STAGE_FIELDS = ("keep", "global_layer")
_PLAN_FIELDS = ("format_version", "stages")


class PlanError(ValueError):
    """A plan is malformed or does not fit the model; the message names the stage and the field."""


@dataclass(frozen=True)
class StagePlan:
    """What to do with one stage.

    Attributes:
        keep: blocks kept, counted from the stage's first (transition) block, 1 <= keep <= m;
            ``keep = m`` with no Global layer leaves the stage untouched.
        global_layer: settings of the Global layer put right after the last kept block, or None.
    """

    keep: int
    global_layer: GlobalLayerConfig | None = None

    def __post_init__(self) -> None:
        problem = _stage_plan_problem(self)
        if problem:
            raise PlanError(f"StagePlan: {problem}")

    def to_dict(self) -> dict[str, Any]:
        glob = self.global_layer.to_dict() if self.global_layer is not None else None
        return {"keep": self.keep, "global_layer": glob}

    @classmethod
    def from_dict(cls, data: Any, *, stage: str = "?") -> "StagePlan":
        where = f"plan for stage {stage!r}"
        if not isinstance(data, Mapping):
            raise PlanError(f"{where}: expected a mapping with 'keep' and 'global_layer', got {type(data).__name__}")
        _reject_unknown(data, _STAGE_FIELDS, where)
        if "keep" not in data:
            raise PlanError(f"{where}: 'keep' is missing (the number of blocks to keep, >= 1)")
        keep = data["keep"]
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise PlanError(f"{where}: keep must be an integer >= 1, got {keep!r}")
        return cls(keep=keep, global_layer=_global_config(data.get("global_layer"), where))

    def is_untouched(self, m: int) -> bool:
        return self.keep >= m and self.global_layer is None

    def describe(self, m: int | None = None) -> str:
        if m is not None and self.is_untouched(m):
            return "untouched"
        text = f"keep {self.keep}"
        if self.global_layer is not None:
            text += " + " + _describe_global(self.global_layer)
        return text


@dataclass(frozen=True)
class CompressionPlan:
    """Per stage name, a :class:`StagePlan`; stages not named are untouched.

    Build one with :meth:`identity` or :meth:`paper` from :func:`pdenas.surgery.find_stages`, or
    from JSON with :meth:`from_json`; check it against a model's stages with :meth:`validate`.
    """

    stages: dict[str, StagePlan] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.stages, Mapping):
            raise PlanError(f"CompressionPlan.stages must map stage names to StagePlan, got {type(self.stages).__name__}")
        for name, plan in self.stages.items():
            if not isinstance(name, str) or not name:
                raise PlanError(f"plan stage names must be non-empty strings, got {name!r}")
            if not isinstance(plan, StagePlan):
                raise PlanError(f"plan for stage {name!r}: expected a StagePlan, got {type(plan).__name__}")
        object.__setattr__(self, "stages", dict(self.stages))  # a private copy

    # --- building ---

    @classmethod
    def identity(cls, stages: Sequence[Stage]) -> "CompressionPlan":
        """The original network: every stage keeps all m blocks, no Global layer."""
        return cls({s.name: StagePlan(keep=s.m) for s in stages})

    @classmethod
    def paper(cls, stages: Sequence[Stage], *, config: GlobalLayerConfig | None = None) -> "CompressionPlan":
        """The paper's recipe: every stage keeps its first block and gets one Global layer
        (K = 1, dt = 0.2 unless ``config`` says otherwise)."""
        config = config if config is not None else GlobalLayerConfig(iterations=1)
        return cls({s.name: StagePlan(keep=1, global_layer=config) for s in stages})

    def with_stage(self, name: str, plan: StagePlan) -> "CompressionPlan":
        """A copy with the plan of stage ``name`` set to ``plan``."""
        return CompressionPlan({**self.stages, name: plan})

    # --- checking ---

    def validate(self, stages: Sequence[Stage], *, strict: bool = True) -> None:
        """Raise :class:`PlanError` if the plan names a stage the model lacks (when ``strict``) or
        keeps more blocks than a stage has."""
        by_name = {s.name: s for s in stages}
        for name, plan in self.stages.items():
            stage = by_name.get(name)
            if stage is None:
                if strict:
                    raise PlanError(_unknown_stage_message(name, by_name))
                continue
            if not 1 <= plan.keep <= stage.m:
                raise PlanError(f"plan for stage {name!r}: keep={plan.keep} is out of range 1..{stage.m}")

    def is_identity(self, stages: Sequence[Stage]) -> bool:
        """Whether applying the plan to a model with these stages changes nothing."""
        return all(self.stages[s.name].is_untouched(s.m) for s in stages if s.name in self.stages)

    # --- words and data ---

    def describe(self, stages: Sequence[Stage] | None = None) -> str:
        """One line, e.g. ``layer1: keep 1 + Global K=3 dt=0.21; layer2: untouched``.

        With ``stages``, every stage of the model is listed in forward order and unchanged ones
        read ``untouched``; without, the stages the plan names are listed.
        """
        if stages is None:
            parts = [f"{name}: {plan.describe()}" for name, plan in self.stages.items()]
        else:
            parts = [f"{s.name}: {self.stages[s.name].describe(s.m) if s.name in self.stages else 'untouched'}" for s in stages]
        return "; ".join(parts) if parts else "no changes"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": PLAN_FORMAT_VERSION,
            "stages": {name: plan.to_dict() for name, plan in self.stages.items()},
        }

    @classmethod
    def from_dict(cls, data: Any) -> "CompressionPlan":
        if not isinstance(data, Mapping):
            raise PlanError(f"a compression plan must be a mapping with a 'stages' key, got {type(data).__name__}")
        _reject_unknown(data, _PLAN_FIELDS, "compression plan")
        version = data.get("format_version", PLAN_FORMAT_VERSION)
        if version != PLAN_FORMAT_VERSION:
            raise PlanError(
                f"compression plan has format_version={version!r}; this pdenas reads version {PLAN_FORMAT_VERSION}"
            )
        stages = data.get("stages", {})
        if not isinstance(stages, Mapping):
            raise PlanError(f"compression plan 'stages' must map stage names to plans, got {type(stages).__name__}")
        return cls({str(name): StagePlan.from_dict(plan, stage=str(name)) for name, plan in stages.items()})

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "CompressionPlan":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise PlanError(f"compression plan is not valid JSON: {err}") from None
        return cls.from_dict(data)


def _stage_plan_problem(plan: StagePlan) -> str | None:
    keep = plan.keep
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        return f"keep must be an integer >= 1, got {keep!r}"
    if plan.global_layer is not None and not isinstance(plan.global_layer, GlobalLayerConfig):
        return f"global_layer must be a GlobalLayerConfig or None, got {type(plan.global_layer).__name__}"
    return None


def _global_config(data: Any, where: str) -> GlobalLayerConfig | None:
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise PlanError(f"{where}: global_layer must be a mapping of Global layer settings or null, got {type(data).__name__}")
    try:
        return GlobalLayerConfig.from_dict(dict(data))
    except GlobalLayerConfigError as err:
        message = str(err)
        first_word = message.split(" ", 1)[0]
        joiner = "." if first_word in GlobalLayerConfig.__dataclass_fields__ else ": "
        raise PlanError(f"{where}: global_layer{joiner}{message}") from None
    except TypeError as err:
        raise PlanError(f"{where}: global_layer: {err}") from None


def _reject_unknown(data: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PlanError(f"{where}: unknown field {key!r}{hint}; fields are {', '.join(known)}")


def _unknown_stage_message(name: str, by_name: Mapping[str, Stage]) -> str:
    close = difflib.get_close_matches(name, list(by_name), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    known = ", ".join(by_name) or "none"
    return f"plan names stage {name!r}, which the model does not have{hint}; its stages are: {known}"


def _describe_global(config: GlobalLayerConfig) -> str:
    text = f"Global K={config.iterations} dt={config.dt:.3g}"
    defaults = GlobalLayerConfig()
    extras = [
        f"{name}={getattr(config, name)}"
        for name in ("diffusion", "advection", "forcing", "residual", "init", "dx", "dy")
        if getattr(config, name) != getattr(defaults, name)
    ]
    return text + (f" ({', '.join(extras)})" if extras else "")
