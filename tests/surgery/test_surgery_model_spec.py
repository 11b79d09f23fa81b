"""The user's model from the command line: --model specs and --weights files (issue 3, section 4)."""

import textwrap

import pytest
import torch
import torchvision
from torch import nn

from pdenas.surgery import ModelSpecError, WeightsError, build_model, load_weights
from pdenas.zoo import CifarResNet

FACTORIES = textwrap.dedent(
    """
    from torch import nn

    def tiny(num_classes=10):
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))

    def with_channels(*, num_classes=10, in_channels=3):
        return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))

    def no_arguments():
        return tiny(7)

    def not_a_module(num_classes=10):
        return "resnet"

    def broken(num_classes=10):
        raise RuntimeError("out of coffee")

    class Nets:
        @staticmethod
        def build(num_classes=10):
            return tiny(num_classes)

    NUMBER = 3
    """
)


@pytest.fixture()
def factories(tmp_path, monkeypatch):
    (tmp_path / "user_factories_for_pdenas.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_factories_for_pdenas"


def test_zoo_torchvision_and_factory_specs(factories):
    zoo = build_model("resnet20", num_classes=5, in_channels=1)
    assert isinstance(zoo, CifarResNet) and zoo.fc.out_features == 5 and zoo.conv1.in_channels == 1
    tv = build_model("tv:resnet18", num_classes=5)
    assert isinstance(tv, torchvision.models.ResNet) and tv.fc.out_features == 5
    user = build_model(f"{factories}:tiny", num_classes=4)
    assert user[-1].out_features == 4
    assert build_model(f"{factories}:with_channels", in_channels=2)[0].in_channels == 2
    assert build_model(f"{factories}:no_arguments")[-1].out_features == 7  # called without arguments
    assert build_model(f"{factories}:Nets.build", num_classes=3)[-1].out_features == 3


def test_in_channels_adapts_the_first_convolution_of_torchvision_models_and_factories(factories):
    tv = build_model("tv:resnet18", in_channels=1)
    assert tv.conv1.in_channels == 1 and tv.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 10)
    assert build_model(f"{factories}:tiny", in_channels=1)[0].in_channels == 1


@pytest.mark.parametrize(
    "spec,message",
    [
        ("resnet5", "unknown model 'resnet5' (did you mean 'resnet56'?); --model takes a zoo name (resnet20, "),
        ("resnet18", "unknown model 'resnet18' (for the torchvision model write 'tv:resnet18'; did you mean "),
        ("tv:resnet19", "unknown torchvision model 'tv:resnet19'; did you mean tv:resnet18"),
        ("", "--model must be a zoo name, tv:NAME or package.module:factory, got ''"),
        ("no_such_package_xyz:build", "--model 'no_such_package_xyz:build': cannot import 'no_such_package_xyz' "
                                      "(ModuleNotFoundError: No module named 'no_such_package_xyz'); is it on PYTHONPATH?"),
        ("FACT:missing", "--model 'FACT:missing': module 'FACT' has no attribute 'missing'"),
        ("FACT:NUMBER", "--model 'FACT:NUMBER': 'NUMBER' is a int, not a callable"),
        ("FACT:not_a_module", "factory 'FACT:not_a_module' returned str, not a torch.nn.Module"),
        ("FACT:broken", "factory 'FACT:broken' failed: RuntimeError: out of coffee"),
    ],
    ids=["zoo-typo", "bare-tv-name", "tv-typo", "empty", "no-module", "no-attribute", "not-callable",
         "not-a-module", "factory-raises"],
)
def test_bad_specs_are_one_line_errors(factories, spec, message):
    spec = spec.replace("FACT", factories)
    with pytest.raises(ModelSpecError) as err:
        build_model(spec)
    text = str(err.value)
    assert text.startswith(message.replace("FACT", factories)), text
    assert "\n" not in text


def _resnet20_state(path, *, wrap=None, prefix=""):
    torch.manual_seed(1)
    source = build_model("resnet20")
    state = {prefix + k: v for k, v in source.state_dict().items()}
    torch.save({wrap: state} if wrap else state, path)
    return source


@pytest.mark.parametrize("wrap,prefix", [(None, ""), ("state_dict", ""), (None, "module.")],
                         ids=["raw", "wrapped", "data-parallel"])
def test_load_weights_accepts_state_dicts(tmp_path, wrap, prefix):
    source = _resnet20_state(tmp_path / "w.pt", wrap=wrap, prefix=prefix)
    target = build_model("resnet20")
    assert load_weights(target, tmp_path / "w.pt") is target
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_load_weights_mismatch_names_missing_and_unexpected_keys(tmp_path):
    _resnet20_state(tmp_path / "w.pt")
    with pytest.raises(WeightsError) as err:
        load_weights(build_model("resnet32"), tmp_path / "w.pt")
    text = str(err.value)
    assert "\n" not in text
    assert "does not fit the model: missing keys: layer1.3.conv1.weight, " in text
    assert " more" in text  # long lists are cut with a count
    wrong = build_model("resnet20")
    del_keys = {k: v for k, v in wrong.state_dict().items() if not k.startswith("fc.")}
    del_keys["extra.weight"] = torch.zeros(1)
    torch.save(del_keys, tmp_path / "partial.pt")
    with pytest.raises(WeightsError, match="missing keys: fc.weight, fc.bias; unexpected keys: extra.weight$"):
        load_weights(build_model("resnet20"), tmp_path / "partial.pt")


def test_load_weights_shape_mismatch_and_unreadable_files(tmp_path):
    _resnet20_state(tmp_path / "w.pt")
    with pytest.raises(WeightsError, match=r"shape mismatches \(file != model\): fc.weight \(10, 64\) != \(100, 64\)"):
        load_weights(build_model("resnet20", num_classes=100), tmp_path / "w.pt")
    with pytest.raises(WeightsError, match="--weights: no file at"):
        load_weights(build_model("resnet20"), tmp_path / "missing.pt")
    torch.save(nn.Linear(2, 2), tmp_path / "module.pt")
    with pytest.raises(WeightsError, match=r"cannot read .* with torch.load\(weights_only=True\)") as err:
        load_weights(build_model("resnet20"), tmp_path / "module.pt")
    assert "\n" not in str(err.value)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="holds a list, not a state dict"):
        load_weights(build_model("resnet20"), tmp_path / "list.pt")
    torch.save({"format": "pdenas.compressed", "state_dict": {}}, tmp_path / "ckpt.pt")
    with pytest.raises(WeightsError, match="is a compressed model .*, not the original: pass the original's weights"):
        load_weights(build_model("resnet20"), tmp_path / "ckpt.pt")


def test_load_weights_takes_a_compressed_checkpoint_of_the_identity_plan_only(tmp_path):
    """``save_compressed`` with the identity plan is the original model (benchmarks/models/*.pt, a study's
    original.pt): its weights load; a checkpoint whose plan drops blocks or adds Global layers is not."""
    from pdenas import CompressionPlan, StagePlan, compress, find_stages, save_compressed

    example = torch.zeros(2, 3, 32, 32)
    trained = build_model("resnet20")
    stages = find_stages(trained, example)
    for name, plan in (("identity", CompressionPlan.identity(stages)), ("dropped", CompressionPlan({"layer2": StagePlan(keep=1)})),
                       ("global", CompressionPlan.paper(stages))):
        save_compressed(tmp_path / f"{name}.pt", compress(trained, plan, example), plan=plan, model_spec="resnet20",
                        input_size=(3, 32, 32))
    model = load_weights(build_model("resnet20"), tmp_path / "identity.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.state_dict().values(), strict=True))
    with pytest.raises(WeightsError, match=r"dropped.pt is a compressed model \(layer2: keep 1\), not the original"):
        load_weights(build_model("resnet20"), tmp_path / "dropped.pt")
    with pytest.raises(WeightsError, match=r"global.pt is a compressed model \(layer1: keep 1 \+ Global; .*load it with pdenas.load_compressed"):
        load_weights(build_model("resnet20"), tmp_path / "global.pt")
