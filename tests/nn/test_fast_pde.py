"""The fast Global layer (issue 7) computes the literal scheme's numbers, forward and backward."""

import itertools
import warnings

import pytest
import torch

import pdenas.nn._compile as compile_mod
import pdenas.nn._shift as shift_mod
from pdenas.nn import GlobalLayer, GlobalLayerConfig, get_compile, set_compile
from pdenas.nn._compiled_pde import pde_grads, pde_states
from pdenas.nn._fast_pde import global_pde_fast
from pdenas.nn.functional import global_pde, global_pde_reference

TOL = 1e-5  # max abs difference allowed in float32


def _inputs(shape, *, constant=(), h_prev=False, alias=True, dtype=torch.float32, seed=0):
    """f, h, u, v, Dx, Dy, h_prev as leaves; ``constant`` names fields passed as Python floats."""
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(shape, generator=g, dtype=dtype)
    h = f if alias else torch.randn(shape, generator=g, dtype=dtype)
    fields = {n: 0.3 if n in constant else torch.rand(shape, generator=g, dtype=dtype) * 0.5 for n in ("u", "v", "Dx", "Dy")}
    hp = torch.randn(shape, generator=g, dtype=dtype) if h_prev else None
    return [f, h, fields["u"], fields["v"], fields["Dx"], fields["Dy"], hp]


def _leaves(values):
    """Fresh leaf copies (requires_grad) preserving which arguments are the same tensor."""
    copies = {}
    out = []
    for t in values:
        if isinstance(t, torch.Tensor):
            copies.setdefault(id(t), t.detach().clone().requires_grad_())
            out.append(copies[id(t)])
        else:
            out.append(t)
    return out


def _compare(impl, values, **kw):
    a, b = _leaves(values), _leaves(values)
    out = impl(*a[:6], h_prev=a[6], **kw)
    ref = global_pde_reference(*b[:6], h_prev=b[6], **kw)
    assert (out - ref).abs().max().item() <= TOL
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * w).sum().backward()
    (ref * w).sum().backward()
    for x, y in zip(a, b):
        if isinstance(x, torch.Tensor):
            assert x.grad is not None
            assert (x.grad - y.grad).abs().max().item() <= TOL


SHAPES = [(2, 3, 8, 8), (1, 2, 5, 7), (2, 4, 6, 3)]
CASES = list(itertools.product(SHAPES, [1, 2, 5], [1, 2], [1, 2]))


@pytest.mark.parametrize("shape,iterations,dx,dy", CASES)
def test_fast_path_matches_reference_forward_and_gradients(shape, iterations, dx, dy):
    values = _inputs(shape, seed=iterations + 10 * dx + 100 * dy)
    _compare(global_pde_fast, values, iterations=iterations, dt=0.15, dx=dx, dy=dy)


@pytest.mark.parametrize(
    "constant,h_prev,alias,forcing",
    [
        (("Dx", "Dy"), False, True, True),  # constant diffusion floats
        (("u", "v"), False, True, True),  # no advection
        (("u", "v", "Dx", "Dy"), True, False, True),  # every field constant
        ((), True, False, True),  # h_prev given, h distinct from f
        ((), False, True, False),  # forcing off
        (("Dy",), True, True, False),
    ],
)
@pytest.mark.parametrize("iterations", [1, 2, 5])
def test_fast_path_variants(constant, h_prev, alias, forcing, iterations):
    values = _inputs((2, 3, 6, 7), constant=constant, h_prev=h_prev, alias=alias, seed=iterations)
    _compare(global_pde_fast, values, iterations=iterations, dt=0.2, forcing=forcing)


@pytest.fixture(params=["small", "large"])
def map_size(request, monkeypatch):
    """Run as if every feature map were small (torch.roll shifts, grouped branch convolution) or large
    (segment views, channels-last)."""
    monkeypatch.setattr(shift_mod, "SMALL_NUMEL", 1 << 40 if request.param == "small" else 0)
    return request.param


@pytest.mark.parametrize("shape,iterations,dx,dy", CASES[::2])
@pytest.mark.parametrize("constant,h_prev", [((), False), (("Dx", "Dy"), False), ((), True), (("u", "v"), False)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_inference_path_matches_reference(shape, iterations, dx, dy, constant, h_prev, layout, map_size):
    """Without autograd (eval): K = 1 streams the step without fields, K > 1 reuses two buffers; shifts as
    segment views (large maps) or torch.roll copies (small maps)."""
    values = [
        t.contiguous(memory_format=layout) if isinstance(t, torch.Tensor) else t
        for t in _inputs(shape, constant=constant, h_prev=h_prev, seed=iterations)
    ]
    kw = dict(iterations=iterations, dt=0.15, dx=dx, dy=dy, h_prev=values[6])
    with torch.no_grad():
        out = global_pde_fast(*values[:6], **kw)
        ref = global_pde_reference(*values[:6], **kw)
    assert (out - ref).abs().max().item() <= TOL


def test_default_global_pde_takes_the_fast_path():
    values = _leaves(_inputs((1, 2, 5, 5)))
    out = global_pde(*values[:6], iterations=2, dt=0.2)
    assert type(out.grad_fn).__name__ == "GlobalPDEFunctionBackward"  # the adjoint backward, not autograd's
    plain = global_pde_reference(*values[:6], iterations=2, dt=0.2)
    assert type(plain.grad_fn).__name__ != "GlobalPDEFunctionBackward"
    # a trace with autograd on cannot record the custom Function: the plain operations instead
    traced = torch.jit.trace(lambda *t: global_pde(*t, 0.3, 0.3, iterations=2, dt=0.2), values[:4], check_trace=False)
    assert "aten::roll" in {node.kind() for node in traced.inlined_graph.nodes()}
    assert (traced(*values[:4]) - global_pde_reference(*values[:4], 0.3, 0.3, iterations=2, dt=0.2)).abs().max() <= TOL


@pytest.mark.parametrize("iterations,dx,dy,constant", [(1, 1, 1, ()), (3, 1, 2, ()), (2, 2, 1, ("Dx",))])
def test_gradcheck_float64(iterations, dx, dy, constant):
    values = _leaves(_inputs((1, 2, 4, 5), constant=constant, h_prev=True, alias=False, dtype=torch.float64))
    tensors = [t for t in values if isinstance(t, torch.Tensor)]

    def fn(*ts):
        it = iter(ts)
        args = [next(it) if isinstance(v, torch.Tensor) else v for v in values]
        return global_pde_fast(*args[:6], h_prev=args[6], iterations=iterations, dt=0.2, dx=dx, dy=dy)

    assert torch.autograd.gradcheck(fn, tensors)


@pytest.mark.parametrize("iterations", [1, 3])
@pytest.mark.parametrize("alias", [True, False])
def test_compiled_kernels_math_matches_reference(iterations, alias):
    """The pure functions that ``torch.compile`` fuses, run eagerly (compiling them is the benchmark's job)."""
    f, h, u, v, Dx, Dy, hp = _inputs((2, 3, 6, 5), h_prev=not alias, alias=alias, seed=3)
    hp = f if hp is None else hp
    opts = (iterations, 0.2, 1, 2, True)
    states, D = pde_states(f, h, hp, u, v, Dx, Dy, *opts)
    a = _leaves([f, h, u, v, Dx, Dy, hp])
    ref = global_pde_reference(*a[:6], h_prev=a[6], iterations=iterations, dt=0.2, dx=1, dy=2)
    assert (states[-1] - ref).abs().max().item() <= TOL
    grad = torch.randn(ref.shape)
    ref.backward(grad)
    aliases = (h is f, hp is f, hp is h)
    grads = pde_grads(grad, [hp, h, *states], D, f, u, v, Dx, Dy, *opts, (True,) * 7, aliases)
    expected = {id(t): t.grad for t in a if isinstance(t, torch.Tensor)}
    got: dict[int, torch.Tensor] = {}
    for leaf, g in zip([a[0], a[1], a[6], a[2], a[3], a[4], a[5]], grads):
        if g is not None:
            got[id(leaf)] = got[id(leaf)] + g if id(leaf) in got else g
    for key, value in expected.items():
        assert (got[key] - value).abs().max().item() <= TOL


def test_saved_memory_grows_by_one_state_per_iteration():
    """Backward keeps the K states, not the per-iteration temporaries of the plain loop."""

    def saved_numel(fn, iterations):
        numel = []

        def pack(t):
            numel.append((t.data_ptr(), t.numel()))
            return t

        values = _leaves(_inputs((2, 3, 8, 8)))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(*values[:6], iterations=iterations, dt=0.2)
        return sum(n for _, n in dict(numel).items())

    state = 2 * 3 * 8 * 8
    fast = {k: saved_numel(global_pde_fast, k) for k in (1, 5)}
    assert fast[5] - fast[1] == 4 * state
    plain = {k: saved_numel(global_pde_reference, k) for k in (1, 5)}
    assert plain[5] - plain[1] > 4 * fast[5] - 4 * fast[1]


def _trained_layer(channels: int, **settings) -> GlobalLayer:
    torch.manual_seed(0)
    layer = GlobalLayer(channels, GlobalLayerConfig(**settings))
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        for bn in [m for m in layer.modules() if isinstance(m, torch.nn.BatchNorm2d)]:
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    return layer.eval()


@pytest.mark.parametrize("settings", [{}, {"iterations": 3, "residual": True}, {"diffusion": "constant"}])
def test_eval_bn_folding_matches_unfused_eval(settings, map_size):
    layer = _trained_layer(6, **settings)
    x = torch.randn(3, 6, 8, 9)
    calls = []
    for bn in layer.batchnorms():
        bn.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        fused = layer(x)
        assert not calls  # every BatchNorm folded: no BatchNorm module ran
        unfused = layer._forward_plain(x)  # the modules as written: conv, BN, ReLU, plain solver
        assert len(calls) == len(layer.batchnorms())
    assert (fused - unfused).abs().max().item() <= TOL


def test_layer_train_step_matches_reference_gradients():
    layer = _trained_layer(4, iterations=2).train()
    x = torch.randn(2, 4, 6, 6)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = layer(xa)
    grads = torch.autograd.grad(out.square().sum(), [xa, *layer.parameters()])
    ref = layer._forward_plain(xb)
    ref_grads = torch.autograd.grad(ref.square().sum(), [xb, *layer.parameters()])
    assert (out - ref).abs().max().item() <= TOL
    for g, r in zip(grads, ref_grads):
        assert (g - r).abs().max().item() <= 1e-4 * max(1.0, r.abs().max().item())


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_layer_keeps_the_memory_format(memory_format, map_size):
    layer = GlobalLayer(4).train()
    x = torch.randn(2, 4, 5, 6).contiguous(memory_format=memory_format).requires_grad_()
    out = layer(x)
    assert out.is_contiguous(memory_format=memory_format) and not out.is_contiguous(memory_format=_other(memory_format))
    out.sum().backward()
    assert x.grad.is_contiguous(memory_format=memory_format)
    with torch.no_grad():
        assert layer.eval()(x).is_contiguous(memory_format=memory_format)


def _other(memory_format: torch.memory_format) -> torch.memory_format:
    return torch.channels_last if memory_format == torch.contiguous_format else torch.contiguous_format


def test_compile_switch_and_fallback(monkeypatch):
    """A compiler failure warns once and the layer keeps working on the eager path."""
    layer = _trained_layer(4, iterations=2)
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        expected = layer(x)
    calls = []

    def broken(fn):
        calls.append(fn)
        raise RuntimeError("no C++ compiler")

    previous = get_compile()
    monkeypatch.setattr(compile_mod, "_compile", broken)
    monkeypatch.setattr(compile_mod.CompiledOrEager, "failed", False)
    try:
        set_compile(True)
        with pytest.warns(RuntimeWarning, match="torch.compile of .* failed"):
            with torch.no_grad():
                got = layer(x)
        assert (got - expected).abs().max().item() <= TOL
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no second warning
            with torch.no_grad():
                layer(x)
            layer.train()(x.requires_grad_()).sum().backward()
        assert len(calls) == 1
    finally:
        set_compile(previous)
    with pytest.raises(ValueError, match="compile mode"):
        set_compile("sometimes")


@pytest.mark.skipif(
    __import__("os").environ.get("PDENAS_TEST_COMPILE") != "1",
    reason="compiles with inductor (about a minute); run with PDENAS_TEST_COMPILE=1",
)
def test_compiled_paths_match_eager():
    x = torch.randn(2, 4, 6, 6)
    previous = get_compile()
    try:
        results = {}
        for mode in (False, True):
            layer = _trained_layer(4, iterations=2)  # the same fresh state (training updates BN statistics)
            set_compile(mode)
            with torch.no_grad():
                evaluated = layer.eval()(x)
            xa = x.clone().requires_grad_()
            out = layer.train()(xa)
            grads = torch.autograd.grad(out.square().sum(), [xa, *layer.parameters()])
            results[mode] = (evaluated, out, *grads)
        assert not compile_mod.CompiledOrEager.failed
        for eager, compiled in zip(results[False], results[True]):
            assert (eager - compiled).abs().max().item() <= 1e-4 * max(1.0, eager.abs().max().item())
    finally:
        set_compile(previous)
