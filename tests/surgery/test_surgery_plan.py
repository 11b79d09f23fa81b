"""CompressionPlan: JSON round trip, helpers, validation against a model's stages (issue 3, section 2)."""

import json

import pytest

from pdenas.nn import GlobalLayerConfig
from pdenas.surgery import CompressionPlan, PlanError, Stage, StagePlan


def _stage(name: str, m: int, channels: int = 16) -> Stage:
    paths = tuple((f"{name}.{i}",) for i in range(m))
    return Stage(name, name, paths, channels, 8, 8, m, block_macs=1000, block_params=100)


STAGES = [_stage("layer1", 9), _stage("layer2", 5, 32), _stage("layer3", 3, 64)]


def test_identity_and_paper_plans():
    identity = CompressionPlan.identity(STAGES)
    assert identity.stages == {"layer1": StagePlan(9), "layer2": StagePlan(5), "layer3": StagePlan(3)}
    assert identity.is_identity(STAGES)
    paper = CompressionPlan.paper(STAGES)
    assert set(paper.stages) == {"layer1", "layer2", "layer3"}
    for plan in paper.stages.values():
        assert plan.keep == 1 and plan.global_layer == GlobalLayerConfig(iterations=1)
    assert not paper.is_identity(STAGES)
    config = GlobalLayerConfig(iterations=3, dt=0.1, residual=True)
    custom = CompressionPlan.paper(STAGES, config=config)
    assert custom.stages == {name: StagePlan(1, config) for name in ("layer1", "layer2", "layer3")}


def test_identity_means_nothing_changes():
    assert CompressionPlan().is_identity(STAGES)  # stages a plan does not name are untouched
    assert CompressionPlan({"layer2": StagePlan(5)}).is_identity(STAGES)
    assert CompressionPlan({"layer4": StagePlan(1)}).is_identity(STAGES)  # not a stage of this model
    # all m blocks kept, but a Global layer added after them: the model changes
    with_global = CompressionPlan({"layer2": StagePlan(5, GlobalLayerConfig())})
    assert not with_global.is_identity(STAGES)
    assert with_global.describe(STAGES) == "layer1: untouched; layer2: keep 5 + Global K=1 dt=0.2; layer3: untouched"
    assert not CompressionPlan({"layer3": StagePlan(2)}).is_identity(STAGES)  # a block dropped


def test_json_round_trip():
    plan = CompressionPlan({
        "layer1": StagePlan(1, GlobalLayerConfig(iterations=3, dt=0.21, residual=True)),
        "layer2": StagePlan(4),
    })
    text = plan.to_json()
    data = json.loads(text)
    assert data["format_version"] == 1
    assert data["stages"]["layer1"]["keep"] == 1 and data["stages"]["layer2"] == {"keep": 4, "global_layer": None}
    assert data["stages"]["layer1"]["global_layer"] == GlobalLayerConfig(iterations=3, dt=0.21, residual=True).to_dict()
    again = CompressionPlan.from_json(text)
    assert again == plan and again is not plan
    assert again.stages["layer1"].global_layer == GlobalLayerConfig(iterations=3, dt=0.21, residual=True)
    assert again != CompressionPlan.from_json(text.replace("0.21", "0.22"))  # the values are read, not defaults


def test_describe():
    plan = CompressionPlan({"layer1": StagePlan(1, GlobalLayerConfig(iterations=3, dt=0.21)), "layer2": StagePlan(5)})
    assert plan.describe(STAGES) == "layer1: keep 1 + Global K=3 dt=0.21; layer2: untouched; layer3: untouched"
    assert plan.describe() == "layer1: keep 1 + Global K=3 dt=0.21; layer2: keep 5"
    residual = CompressionPlan({"layer3": StagePlan(2, GlobalLayerConfig(residual=True))})
    assert residual.describe(STAGES) == "layer1: untouched; layer2: untouched; layer3: keep 2 + Global K=1 dt=0.2 (residual=True)"
    assert CompressionPlan().describe() == "no changes"


def test_with_stage_returns_a_new_plan():
    plan = CompressionPlan.identity(STAGES)
    new = StagePlan(2, GlobalLayerConfig(iterations=4))
    changed = plan.with_stage("layer2", new)
    assert changed.stages == {**plan.stages, "layer2": new}
    assert plan.stages["layer2"] == StagePlan(5)  # the original is untouched
    assert plan.with_stage("layer4", new).stages["layer4"] == new  # a stage not yet named is added


def test_the_plan_owns_its_stage_dict():
    stages = {"layer1": StagePlan(2)}
    plan = CompressionPlan(stages)
    stages["layer2"] = StagePlan(1)
    assert list(plan.stages) == ["layer1"]


@pytest.mark.parametrize(
    "plan,message",
    [
        (CompressionPlan({"layer2": StagePlan(7)}), "plan for stage 'layer2': keep=7 is out of range 1..5"),
        (CompressionPlan({"layer_2": StagePlan(1)}),
         "plan names stage 'layer_2', which the model does not have (did you mean 'layer2'?); "
         "its stages are: layer1, layer2, layer3"),
    ],
    ids=["keep-out-of-range", "unknown-stage"],
)
def test_validate_names_the_stage_and_field(plan, message):
    with pytest.raises(PlanError) as err:
        plan.validate(STAGES)
    assert str(err.value) == message


def test_validate_can_skip_unknown_stages():
    unknown = CompressionPlan({"layer4": StagePlan(1)})
    with pytest.raises(PlanError, match="plan names stage 'layer4', which the model does not have"):
        unknown.validate(STAGES)  # strict by default
    assert unknown.validate(STAGES, strict=False) is None  # no error: the unknown stage is skipped
    with pytest.raises(PlanError, match=r"keep=4 is out of range 1\.\.3"):  # known stages are still checked
        CompressionPlan({"layer4": StagePlan(1), "layer3": StagePlan(4)}).validate(STAGES, strict=False)


@pytest.mark.parametrize(
    "stage_data,message",
    [
        ({"keep": 0}, "plan for stage 'layer1': keep must be an integer >= 1, got 0"),
        ({"keep": "2"}, "plan for stage 'layer1': keep must be an integer >= 1, got '2'"),
        ({"keep": True}, "plan for stage 'layer1': keep must be an integer >= 1, got True"),
        ({"global_layer": None}, "plan for stage 'layer1': 'keep' is missing"),
        ({"keep": 1, "global_layer": {"dt": -1}},
         "plan for stage 'layer1': global_layer.dt must be a finite number > 0, got -1"),
        ({"keep": 1, "global_layer": {"iterations": 0}},
         "plan for stage 'layer1': global_layer.iterations must be an integer >= 1, got 0"),
        ({"keep": 1, "global_layer": {"dtt": 0.1}},
         "plan for stage 'layer1': global_layer: unknown Global layer setting(s) ['dtt']"),
        ({"keep": 1, "global_layer": 3}, "plan for stage 'layer1': global_layer must be a mapping"),
        ({"kep": 1}, "plan for stage 'layer1': unknown field 'kep' (did you mean 'keep'?); fields are keep, global_layer"),
    ],
    ids=["keep-0", "keep-str", "keep-bool", "keep-missing", "negative-dt", "iterations-0", "unknown-setting", "bad-global", "typo"],
)
def test_from_dict_errors_name_the_stage_and_field(stage_data, message):
    with pytest.raises(PlanError) as err:
        CompressionPlan.from_dict({"stages": {"layer1": stage_data}})
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "data,message",
    [
        ([1, 2], "a compression plan must be a mapping with a 'stages' key, got list"),
        ({"stage": {}}, "compression plan: unknown field 'stage' (did you mean 'stages'?)"),
        ({"format_version": 2, "stages": {}}, "compression plan has format_version=2; this pdenas reads version 1"),
        ({"stages": []}, "compression plan 'stages' must map stage names to plans, got list"),
    ],
)
def test_malformed_plans(data, message):
    with pytest.raises(PlanError) as err:
        CompressionPlan.from_dict(data)
    assert str(err.value).startswith(message)


def test_bad_json_and_bad_constructor_arguments():
    with pytest.raises(PlanError, match="not valid JSON"):
        CompressionPlan.from_json("{stages: ")
    with pytest.raises(PlanError, match="StagePlan: keep must be an integer >= 1, got 0"):
        StagePlan(0)
    with pytest.raises(PlanError, match="StagePlan: keep must be an integer >= 1, got True"):
        StagePlan(True)  # a bool is not a number of blocks
    with pytest.raises(PlanError, match="global_layer must be a GlobalLayerConfig or None, got dict"):
        StagePlan(1, {"dt": 0.1})
    with pytest.raises(PlanError, match="plan for stage 'layer1': expected a StagePlan, got int"):
        CompressionPlan({"layer1": 3})
    with pytest.raises(PlanError, match="plan stage names must be non-empty strings, got ''"):
        CompressionPlan({"": StagePlan(1)})
    with pytest.raises(ValueError):  # callers that catch ValueError catch plan errors too
        CompressionPlan.from_dict({"stages": {"layer1": {"keep": 0}}})
