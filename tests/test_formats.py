"""The writers of pdenas.export (ONNX, TorchScript, AOTInductor): each file computes the model's logits
(max abs diff <= 1e-4) at other batch sizes than the example's, and runs where pdenas cannot be imported."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from pdenas.export import ExportError, aoti_runner, export_aoti, export_onnx, export_torchscript, onnx_runner
from pdenas.zoo import create_model

TOLERANCE = 1e-4


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny inputs: one thread."""


def _model(name: str = "resnet_tiny_global", **kwargs) -> nn.Module:
    """A zoo model in eval mode with BatchNorm statistics that are not the identity."""
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    with torch.no_grad():
        for bn in [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]:
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _without_pdenas(code: str) -> str:
    """Run ``code`` in a fresh interpreter where ``import pdenas`` fails; returns its stdout."""
    script = "import sys\nsys.modules['pdenas'] = None\n" + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("name,kwargs", [("resnet_tiny_global", {"iterations": 2}), ("resnet20", {})])
def test_onnx_file_matches_the_model_in_onnxruntime(name, kwargs, tmp_path):
    pytest.importorskip("onnxruntime")
    model = _model(name, **kwargs)
    path = tmp_path / "model.onnx"
    assert export_onnx(model, path, torch.randn(2, 3, 32, 32)) == "torchscript"
    run, runtime, _ = onnx_runner(path)
    assert runtime.startswith("onnxruntime")
    for batch in (1, 5):
        x = torch.randn(batch, 3, 32, 32)
        assert abs(run(x.numpy()) - _logits(model, x).numpy()).max() <= TOLERANCE


def test_onnx_global_layers_are_in_their_short_form(tmp_path):
    """The Global layers' shifted neighbours are convolutions: no Slice/Concat/Pad anywhere in the graph."""
    onnx = pytest.importorskip("onnx")
    path = tmp_path / "model.onnx"
    export_onnx(_model(iterations=1), path, torch.randn(1, 3, 32, 32))
    ops = collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)
    assert not {"Slice", "Concat", "Pad", "Gather"} & set(ops), ops
    assert ops["Div"] == 3  # one per Global layer (K = 1: H_1 = M / den)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_onnx_compact_form_matches_the_model_in_onnxruntime(exporter, tmp_path):
    """form="compact" (the fewest operations per Global layer) through both exporters, any batch size."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    model = _model(iterations=1)
    path = tmp_path / "model.onnx"
    assert export_onnx(model, path, torch.randn(2, 3, 32, 32), form="compact", exporter=exporter) == exporter
    ops = collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)
    assert ops["Concat"] == ops["Div"] == ops["Mul"] == 3, ops  # one of each per Global layer
    run, _, _ = onnx_runner(path)
    for batch in (1, 5):
        x = torch.randn(batch, 3, 32, 32)
        assert abs(run(x.numpy()) - _logits(model, x).numpy()).max() <= TOLERANCE


def test_onnx_form_follows_the_batch_size_it_is_meant_for(tmp_path):
    """"auto" writes the compact form up to COMPACT_MAX_BATCH images per call, the narrow form above."""
    onnx = pytest.importorskip("onnx")
    from pdenas.export._formats import COMPACT_MAX_BATCH, onnx_form

    assert onnx_form("auto", COMPACT_MAX_BATCH + 1) == "conv" and onnx_form("conv", 1) == "conv"
    assert onnx_form("compact", 64) == "compact"
    assert onnx_form("auto", max(COMPACT_MAX_BATCH, 1)) == ("compact" if COMPACT_MAX_BATCH >= 1 else "conv")
    model = _model(iterations=1)
    path = tmp_path / "m.onnx"
    export_onnx(model, path, torch.randn(2, 3, 32, 32), batch_size=1)  # traced on 2 images, meant for 1
    concat = sum(node.op_type == "Concat" for node in onnx.load(str(path)).graph.node)
    assert concat == (3 if onnx_form("auto", 1) == "compact" else 0)
    with pytest.raises(ExportError, match="unknown ONNX form 'wide'; use 'auto', 'conv'"):
        export_onnx(model, path, torch.randn(1, 3, 32, 32), form="wide")  # type: ignore[arg-type]


def test_onnx_through_the_dynamo_exporter_is_the_same_short_form(tmp_path):
    """The torch.export-based exporter (export_onnx's fallback) writes the same short form."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    model = _model(iterations=2)
    path = tmp_path / "model.onnx"
    assert export_onnx(model, path, torch.randn(2, 3, 32, 32), exporter="dynamo") == "dynamo"
    ops = collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)
    assert not {"Slice", "Concat", "Pad", "Gather"} & set(ops), ops
    run, _, _ = onnx_runner(path)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 32, 32)
        assert abs(run(x.numpy()) - _logits(model, x).numpy()).max() <= TOLERANCE


def test_torchscript_file_matches_and_runs_without_pdenas(tmp_path):
    model = _model(iterations=2)
    path = tmp_path / "model.pt"
    export_torchscript(model, path, torch.randn(2, 3, 32, 32))
    x = torch.randn(3, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    out = _without_pdenas(f"""
        import torch
        m = torch.jit.load({str(path)!r})
        torch.save(m(torch.load({str(tmp_path / 'x.pt')!r})), {str(tmp_path / 'y.pt')!r})
    """)
    assert out == ""
    assert (torch.load(tmp_path / "y.pt") - _logits(model, x)).abs().max() <= TOLERANCE


def test_onnx_and_torchscript_files_keep_their_metadata_readable_without_pdenas(tmp_path):
    pytest.importorskip("onnxruntime")
    model, metadata = _model(), {"pdenas.model_card": '{"classes": ["a"]}', "note": "ok"}
    export_onnx(model, tmp_path / "m.onnx", torch.randn(2, 3, 32, 32), metadata=metadata)
    export_torchscript(model, tmp_path / "m.pt", torch.randn(2, 3, 32, 32), metadata=metadata)
    out = _without_pdenas(f"""
        import json, onnxruntime, torch
        session = onnxruntime.InferenceSession({str(tmp_path / 'm.onnx')!r})
        extra = {{"pdenas.model_card": "", "note": ""}}
        torch.jit.load({str(tmp_path / 'm.pt')!r}, _extra_files=extra)
        print(json.dumps([session.get_modelmeta().custom_metadata_map, {{k: v.decode() for k, v in extra.items()}}]))
    """)
    onnx_props, extra = json.loads(out)
    assert {k: onnx_props[k] for k in metadata} == metadata
    assert extra == metadata


def test_a_failed_export_keeps_the_previous_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"previous")

    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("cannot trace this\nsecond line")

    with pytest.raises(ExportError, match=r"^TorchScript export failed: RuntimeError: cannot trace this$"):
        export_torchscript(Broken(), path, torch.randn(1, 3))
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary left behind


def test_unknown_onnx_exporter(tmp_path):
    with pytest.raises(ExportError, match="unknown ONNX exporter 'tf'; use 'auto', 'torchscript' or 'dynamo'"):
        export_onnx(_model(), tmp_path / "m.onnx", torch.randn(1, 3, 32, 32), exporter="tf")  # type: ignore[arg-type]


def test_aoti_package_name_is_checked_before_any_work(tmp_path):
    with pytest.raises(ExportError, match=r"must be named \*\.pt2, got model\.so"):
        export_aoti(_model(), tmp_path / "model.so", torch.randn(1, 3, 32, 32))
    with pytest.raises(ExportError, match="cannot load the AOTInductor package"):
        aoti_runner(tmp_path / "missing.pt2")


@pytest.mark.slow
def test_aoti_package_matches_the_model_and_runs_without_pdenas(tmp_path):
    """AOTInductor compiles C++: about a minute on 2 cores (hence slow)."""
    model = _model(iterations=2)
    path = tmp_path / "model.pt2"
    export_aoti(model, path, torch.randn(1, 3, 32, 32), metadata={"pdenas.model_card": "{}"})  # batch 1: exported on 2, dynamic batch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2"]  # no temporary folder left behind
    run = aoti_runner(path)
    assert run.get_metadata()["pdenas.model_card"] == "{}"
    for batch in (1, 3):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            assert (run(x) - _logits(model, x)).abs().max() <= TOLERANCE
    x = torch.randn(2, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    _without_pdenas(f"""
        import torch
        run = torch._inductor.aoti_load_package({str(path)!r})
        with torch.no_grad():
            torch.save(run(torch.load({str(tmp_path / 'x.pt')!r})), {str(tmp_path / 'y.pt')!r})
    """)
    assert (torch.load(tmp_path / "y.pt") - _logits(model, x)).abs().max() <= TOLERANCE
