import sys

import pytest
import torch
from torch import nn

from pdenas.cost import LatencyError, latency, macs_by_module, measure_latency, profile
from pdenas.zoo import create_model, list_models


def test_conv_macs_counts_convolutions_exactly():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    cost = profile(model, (3, 4, 4))
    assert cost.conv_macs == 3 * 8 * 9 * 16 + 8 * 16 * 5
    assert cost.params == 3 * 8 * 9 + 8 * 16 * 5 + 5


def test_macs_counts_elementwise_arithmetic():
    class AddMul(nn.Module):
        def forward(self, x):
            return x * 2 + x  # one multiply and one add per element

    cost = profile(AddMul(), (2, 3, 5))
    assert cost.conv_macs == 0
    assert cost.macs == 2 * 2 * 3 * 5


@pytest.mark.parametrize("name", [n for n in list_models() if n.endswith("_global") and "wrn" not in n])
def test_macs_grow_linearly_with_iterations_while_conv_macs_do_not(name):
    costs = {k: profile(create_model(name, iterations=k)) for k in (1, 2, 3, 5)}
    assert len({c.conv_macs for c in costs.values()}) == 1
    assert len({c.params for c in costs.values()}) == 1
    step = costs[2].macs - costs[1].macs
    assert step > 0
    assert costs[3].macs - costs[2].macs == step
    assert costs[5].macs - costs[1].macs == 4 * step


def test_macs_by_module_splits_the_total():
    model = create_model("resnet20")
    by_module = macs_by_module(model, torch.randn(2, 3, 32, 32))
    assert by_module[""] == profile(model).macs
    assert by_module["layer1"] + by_module["layer2"] + by_module["layer3"] < by_module[""]
    assert by_module["layer1.0"] == by_module["layer1.1"]


def test_profile_keeps_the_training_mode():
    model = create_model("resnet_tiny").train()
    profile(model)
    assert model.training


def test_latency_is_positive_and_model_mode_restored():
    model = create_model("resnet_tiny").train()
    seconds = latency(model, (3, 32, 32), batch_size=4, repeats=3, warmup=1)
    assert 0 < seconds < 5
    assert model.training


def test_profile_restores_each_module_flag():
    model = create_model("resnet_tiny").train()
    model.bn1.eval()  # e.g. a frozen BN
    profile(model)
    latency(model, (3, 32, 32), repeats=1, warmup=0)
    assert model.training and not model.bn1.training


# ------------------------------------------------------------------------------------------ measure_latency


def _calls(model):
    """Record the batch size and the torch thread count of every forward call of ``model``."""
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append((args[0].shape[0], torch.get_num_threads())))
    return seen


@pytest.mark.parametrize("runtime", ["torch", "torchscript", "onnxruntime"])
def test_measure_latency_in_each_runtime(runtime):
    if runtime == "onnxruntime":
        pytest.importorskip("onnxruntime")
    model = create_model("resnet_tiny_global", iterations=1).train()
    result = measure_latency(model, (3, 32, 32), runtime=runtime, batch_size=3, threads=1, min_run_time=0.05)
    assert result.runtime == runtime and result.batch_size == 3 and result.threads == 1 and result.device == "cpu"
    assert result.median_ms > 0 and result.runs >= 1
    assert model.training  # measured in eval mode, the flags restored
    assert set(result.to_dict()) == {"median_ms", "runtime", "batch_size", "threads", "device", "runs"}


def test_measure_latency_runs_the_batch_and_threads_it_reports():
    model = create_model("resnet_tiny")
    seen = _calls(model)
    before = torch.get_num_threads()
    measure_latency(model, (3, 32, 32), batch_size=5, threads=1, min_run_time=0.02)
    assert seen and all(call == (5, 1) for call in seen)
    assert torch.get_num_threads() == before
    seen.clear()
    measure_latency(model, (3, 16, 16), batch_size=2, min_run_time=0.02)  # threads: torch's current count
    assert seen and all(call == (2, before) for call in seen)


def test_measure_latency_errors_are_one_line(monkeypatch):
    model = create_model("resnet_tiny")
    with pytest.raises(LatencyError, match=r"^unknown runtime 'tflite'; known: torch, torchscript, onnxruntime, aoti$"):
        measure_latency(model, runtime="tflite")  # type: ignore[arg-type]
    with pytest.raises(LatencyError, match="batch_size must be a whole number >= 1, got 0"):
        measure_latency(model, batch_size=0)
    with pytest.raises(LatencyError, match="threads must be a whole number >= 1, got 0"):
        measure_latency(model, threads=0)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(LatencyError, match=r"^runtime 'onnxruntime' needs onnxruntime: pip install 'pdenas\[onnx\]'$"):
        measure_latency(model, runtime="onnxruntime")


@pytest.mark.slow
def test_measure_latency_in_aoti():
    """Compiles C++ with AOTInductor: about a minute."""
    result = measure_latency(create_model("resnet_tiny_global"), runtime="aoti", threads=1, min_run_time=0.05)
    assert result.runtime == "aoti" and result.median_ms > 0
