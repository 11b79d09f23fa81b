"""Every form a Global layer runs in computes the literal scheme's numbers (issue 14): eager eval, the
TorchScript trace, the ONNX export run by onnxruntime (narrow and compact forms), the MAC-counting form,
for every registered variant, K in (1, 3), dx/dy > 1, residual, an init block."""

from __future__ import annotations

import collections
import itertools

import pytest
import torch
from torch import nn

import pdenas.nn._shift as shift_mod
from pdenas.export import export_onnx, export_torchscript, onnx_runner
from pdenas.nn import (
    GlobalLayerConfig,
    create_global_layer,
    list_global_layers,
    use_form,
)
from pdenas.nn._compact import GlobalLayerCompact, compact_applies
from pdenas.nn._inference import GlobalLayerInference
from pdenas.nn._stencil import PeriodicStencil, StencilTaps
from pdenas.nn.functional import global_layer_reference

TOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one thread is as fast and immune to a busy machine."""


def trained_layer(variant: str, channels: int, *, init_block: bool = False, seed: int = 0, **settings) -> nn.Module:
    """A layer in eval mode with non-trivial BatchNorm statistics and affine parameters."""
    torch.manual_seed(seed)
    block = nn.Conv2d(channels, channels, 3, padding=1) if init_block else None
    layer = create_global_layer(variant, channels, config=GlobalLayerConfig(**settings), init_block=block)
    with torch.no_grad():
        for bn in [m for m in layer.modules() if isinstance(m, nn.BatchNorm2d)]:
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(-1.5, 1.5)  # negative scales too: ReLU(BN(.)) must not be reordered
            bn.bias.uniform_(-0.2, 0.2)
    return layer.eval()


def literal(layer: nn.Module, f: torch.Tensor) -> torch.Tensor:
    """The layer written out with the paper's code: modules, then ``global_pde_reference``."""
    return global_layer_reference(layer, f)


# (K, dx, dy, residual): K in (1, 3), unit and larger shifts (dy = 3 on a width of 9: wrap on both sides)
SETTINGS = [(1, 1, 1, False), (1, 2, 3, True), (3, 1, 1, True), (3, 2, 3, False)]
CASES = [(v, *s) for v, s in itertools.product(list_global_layers(), SETTINGS)]
SHAPE = (2, 8, 7, 9)


def _case(variant, K, dx, dy, residual, **extra):
    layer = trained_layer(variant, SHAPE[1], iterations=K, dx=dx, dy=dy, residual=residual, dt=0.15, **extra)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(K + dx))
    with torch.no_grad():
        return layer, x, literal(layer, x)


def _max_diff(a, b) -> float:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())


@pytest.fixture(params=["small", "large"])
def map_size(request, monkeypatch):
    """The eager and TorchScript paths for small maps (batch 1) and for large ones."""
    monkeypatch.setattr(shift_mod, "SMALL_NUMEL", 1 << 40 if request.param == "small" else 0)
    return request.param


@pytest.mark.parametrize("variant,K,dx,dy,residual", CASES)
def test_eager_eval_matches_the_literal_scheme(variant, K, dx, dy, residual, map_size):
    layer, x, ref = _case(variant, K, dx, dy, residual)
    with torch.no_grad():
        assert _max_diff(layer(x), ref) <= TOL  # folded constants, cached
        assert _max_diff(layer(x.contiguous(memory_format=torch.channels_last)), ref) <= TOL
        assert _max_diff(layer._forward_plain(x), ref) <= TOL  # the MAC-counting form
        assert _max_diff(GlobalLayerInference(layer, SHAPE[2:])(x), ref) <= TOL  # the ONNX form, eagerly
    assert _max_diff(layer(x).detach(), ref) <= TOL  # eval with autograd on: the modules, unfolded


@pytest.mark.parametrize("variant,K,dx,dy,residual", CASES)
def test_torchscript_trace_matches_the_literal_scheme(variant, K, dx, dy, residual, tmp_path, map_size):
    layer, x, ref = _case(variant, K, dx, dy, residual)
    export_torchscript(layer, tmp_path / "layer.pt", x)
    loaded = torch.jit.load(str(tmp_path / "layer.pt"))
    with torch.no_grad():
        assert _max_diff(loaded(x), ref) <= TOL
        assert _max_diff(loaded(x[:1]), ref[:1]) <= TOL  # another batch size than the trace's


@pytest.mark.parametrize("variant,K,dx,dy,residual", CASES)
def test_onnx_export_matches_the_literal_scheme_in_onnxruntime(variant, K, dx, dy, residual, tmp_path):
    pytest.importorskip("onnxruntime")
    layer, x, ref = _case(variant, K, dx, dy, residual)
    assert export_onnx(layer, tmp_path / "layer.onnx", x) == "torchscript"
    run, runtime, _ = onnx_runner(tmp_path / "layer.onnx")
    assert runtime.startswith("onnxruntime")
    assert _max_diff(run(x.numpy()), ref) <= TOL
    assert _max_diff(run(x[:1].numpy()), ref[:1]) <= TOL  # dynamic batch


@pytest.mark.parametrize("variant,K,dx,dy,residual", [c for c in CASES if c[1] == 1 and c[0] != "constant-diffusion"])
def test_compact_form_matches_the_literal_scheme_eagerly_and_in_onnxruntime(variant, K, dx, dy, residual, tmp_path):
    pytest.importorskip("onnxruntime")
    layer, x, ref = _case(variant, K, dx, dy, residual)
    assert compact_applies(layer)
    with torch.no_grad():
        assert _max_diff(GlobalLayerCompact(layer, SHAPE[2:])(x), ref) <= TOL
        with use_form("compact"):
            assert _max_diff(layer(x), ref) <= TOL
    export_onnx(layer, tmp_path / "layer.onnx", x, form="compact")
    run, runtime, _ = onnx_runner(tmp_path / "layer.onnx")
    assert runtime.startswith("onnxruntime")
    assert _max_diff(run(x.numpy()), ref) <= TOL
    assert _max_diff(run(x[:1].numpy()), ref[:1]) <= TOL  # dynamic batch


@pytest.mark.parametrize("settings", [{"forcing": False}, {"dt": 0.3, "dx": 2}])
def test_compact_form_with_an_init_block_and_without_forcing(settings, tmp_path):
    pytest.importorskip("onnxruntime")
    layer = trained_layer("advection-diffusion", 8, init_block=True, iterations=1, **settings)
    x = torch.randn(SHAPE)
    with torch.no_grad():
        ref = literal(layer, x)
        assert _max_diff(GlobalLayerCompact(layer, SHAPE[2:])(x), ref) <= TOL
    export_onnx(layer, tmp_path / "l.onnx", x, form="compact")
    assert _max_diff(onnx_runner(tmp_path / "l.onnx")[0](x.numpy()), ref) <= TOL


@pytest.mark.parametrize("settings", [{"iterations": 3}, {"iterations": 1, "diffusion": "constant", "cdx": 0.7, "cdy": 0.3}])
def test_layers_without_a_compact_form_export_the_narrow_one(settings, tmp_path):
    """K > 1 or a constant diffusion: form="compact" writes the narrow form, with the same numbers."""
    pytest.importorskip("onnx")
    layer = trained_layer("advection-diffusion", 8, **settings)
    x = torch.randn(SHAPE)
    assert not compact_applies(layer)
    with pytest.raises(ValueError, match="one iteration and a learned diffusion"):
        GlobalLayerCompact(layer, SHAPE[2:])
    ops = {form: _onnx_ops(layer, x, tmp_path / f"{form}.onnx", form=form) for form in ("conv", "compact")}
    assert ops["compact"] == ops["conv"]
    assert _max_diff(onnx_runner(tmp_path / "compact.onnx")[0](x.numpy()), literal(layer, x).detach()) <= TOL


def test_init_block_constant_diffusion_and_no_forcing_on_every_path(tmp_path):
    pytest.importorskip("onnxruntime")
    for K, settings in itertools.product((1, 3), ({"forcing": False}, {"diffusion": "constant", "cdx": 0.7, "cdy": 0.3})):
        layer = trained_layer("advection-diffusion", 8, init_block=True, iterations=K, dx=2, **settings)
        x = torch.randn(SHAPE)
        with torch.no_grad():
            ref = literal(layer, x)
            assert _max_diff(layer(x), ref) <= TOL
            export_torchscript(layer, tmp_path / "l.pt", x)
            assert _max_diff(torch.jit.load(str(tmp_path / "l.pt"))(x), ref) <= TOL
        export_onnx(layer, tmp_path / "l.onnx", x)
        assert _max_diff(onnx_runner(tmp_path / "l.onnx")[0](x.numpy()), ref) <= TOL


def _onnx_ops(layer: nn.Module, x: torch.Tensor, path, form: str = "auto") -> collections.Counter:
    import onnx

    export_onnx(layer, path, x, form=form)
    return collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_onnx_export_is_the_short_form(tmp_path):
    """No Slice/Concat/Pad for the shifted neighbours, and a handful of operations per layer and iteration."""
    pytest.importorskip("onnx")
    counts = {}
    for K in (1, 2, 3):
        layer = trained_layer("advection-diffusion", 16, iterations=K)
        ops = _onnx_ops(layer, torch.randn(1, 16, 8, 8), tmp_path / f"k{K}.onnx", form="conv")
        assert not {"Slice", "Concat", "Pad", "Gather", "ScatterND"} & set(ops), ops
        counts[K] = sum(n for op, n in ops.items() if op not in ("Constant", "Identity"))
    # K = 1: 4 field convolutions, 6 periodic stencils (2 convolutions each), 5 products and their sum, den,
    # the division and the output convolution, each ReLU and sum a node of its own before ONNX Runtime fuses them
    assert counts[1] <= 42  # the literal export had about 120
    # each further iteration: 4 stencils (8 convolutions and their sums), 6 products and their sum
    assert counts[3] - counts[2] <= 26
    with use_form("plain"):  # the counting form records the rolls
        plain = _onnx_ops(trained_layer("advection-diffusion", 16), torch.randn(1, 16, 8, 8), tmp_path / "plain.onnx")
    assert plain["Slice"] > 0


@pytest.mark.parametrize("variant", [v for v in list_global_layers() if v != "constant-diffusion"])
def test_onnx_compact_form_is_the_fewest_operations(variant, tmp_path):
    """K = 1: one Mul and one Div, every term in one convolution of each kind: 15 operations before ONNX
    Runtime fuses the ReLUs and sums into the convolutions (the narrow form: 41 with advection)."""
    pytest.importorskip("onnx")
    layer = trained_layer(variant, 16, iterations=1)
    ops = {form: _onnx_ops(layer, torch.randn(1, 16, 8, 8), tmp_path / f"{form}.onnx", form=form) for form in ("conv", "compact")}
    compact = ops["compact"]
    assert not {"Slice", "Pad", "Gather", "ScatterND"} & set(compact), compact
    assert compact["Mul"] == 1 and compact["Div"] == 1 and compact["Concat"] == 1, compact  # h copied m times, once
    count = {form: sum(n for op, n in c.items() if op not in ("Constant", "Identity")) for form, c in ops.items()}
    assert count["compact"] <= 15
    assert count["compact"] < count["conv"]


def test_use_form_overrides_the_recorded_form():
    layer, x, ref = _case("advection-diffusion", 1, 1, 1, False)
    graphs = {}
    for form in ("plain", "fused", "conv", "compact"):
        with use_form(form), torch.no_grad():
            traced = torch.jit.trace(layer, x, check_trace=False)
        assert _max_diff(traced(x), ref) <= TOL
        graphs[form] = {node.kind() for node in traced.inlined_graph.nodes()}
    assert "aten::batch_norm" in graphs["plain"] and "aten::roll" in graphs["plain"]  # the modules, as written
    assert "aten::batch_norm" not in graphs["fused"] and "aten::addcmul_" in graphs["fused"]  # folded, in place
    assert not {"aten::batch_norm", "aten::roll", "aten::addcmul_"} & graphs["conv"]  # convolutions and products
    assert "aten::cat" in graphs["compact"] and "aten::cat" not in graphs["conv"]  # h copied once per term
    with pytest.raises(ValueError, match="unknown Global layer form 'onnx'"):
        with use_form("onnx"):  # type: ignore[arg-type]
            pass


def test_cached_constants_follow_parameter_changes():
    layer, x, _ = _case("advection-diffusion", 1, 1, 1, False)
    with torch.no_grad():
        before = layer(x)
        layer.u[0].weight.mul_(2.0)  # in place: a new version of the tensor
        layer.bn_out.running_mean.add_(0.3)
        after = layer(x)
        assert _max_diff(after, literal(layer, x)) <= TOL
    assert _max_diff(before, after) > 1e-3
    fresh = trained_layer("advection-diffusion", SHAPE[1], seed=1, dt=0.15)
    layer.load_state_dict(fresh.state_dict())
    with torch.no_grad():
        assert _max_diff(layer(x), literal(fresh, x)) <= TOL


@pytest.mark.parametrize("n,shift", [(1, 1), (2, 1), (3, 2), (4, 2), (5, 7), (9, 3), (6, 6)])
def test_periodic_stencil_is_the_rolled_sum(n, shift):
    """Every shift against every length: 0 mod n, half the length, more than half, more than the length."""
    g = torch.Generator().manual_seed(n * 10 + shift)
    C = 3
    taps = StencilTaps(*(torch.randn(C, generator=g) for _ in range(5)))
    bias = torch.randn(C, generator=g)
    x = torch.randn(2, C, n, n + 1, generator=g)
    dx, dy = shift, shift + 1
    stencil = PeriodicStencil(taps, (n, n + 1), (dx, dy), bias=bias)
    per = lambda t: t.reshape(1, C, 1, 1)  # noqa: E731
    expected = (per(taps.center) * x + per(taps.h_plus) * torch.roll(x, dx, 2) + per(taps.h_minus) * torch.roll(x, -dx, 2)
                + per(taps.w_plus) * torch.roll(x, dy, 3) + per(taps.w_minus) * torch.roll(x, -dy, 3) + per(bias))
    assert _max_diff(stencil(x), expected) <= TOL
