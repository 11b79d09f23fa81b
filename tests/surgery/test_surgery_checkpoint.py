"""Saving and loading a compressed model with its plan (issue 3, section 3)."""

import functools

import pytest
import torch

from pdenas.nn import GlobalLayerConfig
from pdenas.surgery import (
    CheckpointError,
    CompressionPlan,
    StagePlan,
    build_model,
    compress,
    find_stages,
    load_compressed,
    save_compressed,
)
from .surgery_helpers import train_steps


def _trained_compressed(spec: str, size: tuple[int, int, int], plan_of=CompressionPlan.paper):
    torch.manual_seed(0)
    base = build_model(spec, in_channels=size[0])
    x = torch.randn(4, *size)
    plan = plan_of(find_stages(base, x[:2], macs=False))
    model = compress(base, plan, x[:2])
    train_steps(model, x, torch.randint(0, 10, (4,)), steps=2)  # weights and BN statistics move away from init
    return model.eval(), plan, x


@functools.lru_cache(maxsize=None)
def _paper_compressed(spec: str, size: tuple[int, int, int]):
    """Built once per module: saving and loading never change the model."""
    return _trained_compressed(spec, size)


@pytest.mark.parametrize("spec,size", [("resnet20", (3, 32, 32)), ("tv:resnet18", (1, 32, 48))])
def test_round_trip_gives_identical_outputs(tmp_path, spec, size):
    model, plan, x = _paper_compressed(spec, size)
    path = save_compressed(tmp_path / "small.pt", model, plan=plan, model_spec=spec, input_size=size,
                           metadata={"accuracy": 0.5, "trial": 3})
    loaded = load_compressed(path)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.pdenas_plan == plan
    assert loaded.pdenas_spec == {"spec": spec, "num_classes": 10, "in_channels": size[0], "input_size": list(size)}
    assert loaded.pdenas_metadata == {"accuracy": 0.5, "trial": 3}


def test_checkpoint_is_plain_data_readable_with_weights_only(tmp_path):
    plan_of = lambda stages: CompressionPlan({"layer2": StagePlan(2, GlobalLayerConfig(iterations=2, dt=0.1))})  # noqa: E731
    model, plan, _ = _trained_compressed("resnet20", (3, 32, 32), plan_of)
    path = save_compressed(tmp_path / "c.pt", model, plan=plan, model_spec="resnet20", input_size=(3, 32, 32))
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "pdenas.compressed" and raw["format_version"] == 1
    assert raw["model"] == {"spec": "resnet20", "num_classes": 10, "in_channels": 3}
    assert raw["input_size"] == [3, 32, 32] and raw["metadata"] == {}
    assert CompressionPlan.from_dict(raw["plan"]) == plan
    assert set(raw["state_dict"]) == set(model.state_dict())


def test_missing_and_foreign_files_are_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no compressed-model checkpoint at"):
        load_compressed(tmp_path / "nope.pt")
    torch.save(build_model("resnet20").state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="is not a pdenas compressed-model checkpoint"):
        load_compressed(tmp_path / "plain.pt")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled.pt")  # a pickled module: refused by weights_only
    with pytest.raises(CheckpointError, match=r"cannot read .* with torch.load\(weights_only=True\)") as err:
        load_compressed(tmp_path / "pickled.pt")
    assert "\n" not in str(err.value)


def test_weights_that_do_not_fit_the_plan_name_the_keys(tmp_path):
    model, plan, _ = _paper_compressed("resnet20", (3, 32, 32))
    path = save_compressed(tmp_path / "c.pt", model, plan=plan, model_spec="resnet20", input_size=(3, 32, 32))
    raw = torch.load(path, weights_only=True)
    raw["state_dict"]["layer1.0.extra"] = torch.zeros(1)
    del raw["state_dict"]["fc.bias"]
    torch.save(raw, path)
    with pytest.raises(CheckpointError) as err:
        load_compressed(path)
    message = str(err.value)
    assert "\n" not in message
    assert "missing keys: fc.bias" in message and "unexpected keys: layer1.0.extra" in message


def test_bad_metadata_and_input_size_are_refused(tmp_path):
    model, plan, _ = _paper_compressed("resnet20", (3, 32, 32))
    with pytest.raises(CheckpointError, match="metadata must be JSON-serialisable"):
        save_compressed(tmp_path / "c.pt", model, plan=plan, model_spec="resnet20", input_size=(3, 32, 32),
                        metadata={"tensor": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"input_size must be \(channels, height, width\)"):
        save_compressed(tmp_path / "c.pt", model, plan=plan, model_spec="resnet20", input_size=(32, 32))
