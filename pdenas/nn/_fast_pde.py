"""The Global layer's solver with fused passes and an adjoint backward (Kag & Saligrama,
"Condensing CNNs with Partial Differential Equations", CVPR 2022, Sec. 3.2, Eq. 6-8).

One explicit step of the scheme (see :mod:`pdenas.nn.functional`) reads

    H_{k+1} = a H_{k-1} + b H_k + c_hp S_H^+ H_k + c_hm S_H^- H_k + c_wp S_W^+ H_k + c_wm S_W^- H_k + s

with fields that do not change across iterations, all carrying the factor ``D = 1 / (1 + 2Bx + 2By)``:

    a = D (1 - 2Bx - 2By) = 2D - 1       b = -2 D E                s = 2 dt D f
    c_hp = D (2Bx - Ax)   c_hm = D (2Bx + Ax)   c_wp = D (2By - Ay)   c_wm = D (2By + Ay).

Forward: the fields are computed once per call, then each iteration is one ``addcmul`` for
``a H_{k-1} + s`` and one in-place ``addcmul_`` per other term, the shifted neighbours being views
(:mod:`pdenas.nn._shift`), so no ``torch.roll`` copy and no temporary is made.

Backward (:class:`GlobalPDEFunction`): the step is linear in the states, so with the adjoints
``l_k = dL/dH_k`` (``l_K`` = the incoming gradient)

    l_k = b l_{k+1} + sum_j S_j^T (c_j l_{k+1}) + a l_{k+2},        S_H^{+T} = S_H^-,
    dL/dc_j = sum_k l_{k+1} * (the state c_j multiplies in step k),   dL/ds = sum_k l_{k+1},

which needs the states H_{-1} .. H_K and nothing else of the iterations: K + 2 tensors, of which
H_{-1}, H_0 are inputs and H_K the output (autograd of the plain loop keeps about six temporaries
per step). The fields' gradients are then chained to u, v, D_x, D_y and f by hand; since every
field carries D, ``dL/dD`` collapses to ``Q / D`` with ``Q = sum_k l_{k+1} * H_{k+1}``.

With ``compiled`` (:mod:`pdenas.nn._compile`) the same Function runs the forward and this backward
as compiled kernels (:mod:`pdenas.nn._compiled_pde`) and saves only D and the states.
"""

from __future__ import annotations

from typing import NamedTuple, Union

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import _compiled_pde
from ._compile import CompiledOrEager
from ._shift import RolledShifts, SegmentShifts, diff_rolled, fma_rolled_, is_small, mul_rolled

__all__ = ["GlobalPDEFunction", "Coefficients", "global_pde_fast", "coefficients", "solve"]

Field = Union[Tensor, float]


class Options(NamedTuple):
    """The solver's settings (see :func:`pdenas.nn.functional.global_pde`)."""

    iterations: int
    dt: float
    dx: int
    dy: int
    forcing: bool
    compiled: bool = False  # run the compiled pure kernels of :mod:`pdenas.nn._compiled_pde`


_compiled_states = CompiledOrEager(_compiled_pde.pde_states, name="the Global layer solver (forward)")
_compiled_last = CompiledOrEager(_compiled_pde.pde_last, name="the Global layer solver (inference)")
_compiled_grads = CompiledOrEager(_compiled_pde.pde_grads, name="the Global layer solver (backward)")


class Coefficients(NamedTuple):
    """The scheme's fields (tensors of the state's shape, or Python floats when constant)."""

    D: Field
    a: Field | None  # factor of H_{k-1}: 2D - 1 (None when folded into ``s``, see :func:`coefficients`)
    b: Field  # factor of H_k: -2 D E
    c_hp: Field  # factor of S_H^+ H_k
    c_hm: Field  # factor of S_H^- H_k
    c_wp: Field  # factor of S_W^+ H_k
    c_wm: Field  # factor of S_W^- H_k
    s: Field | None  # source 2 dt D f (None without forcing); a + 2 dt D when folded


def global_pde_fast(
    f: Tensor,
    h: Tensor,
    u: Field,
    v: Field,
    Dx: Field,
    Dy: Field,
    *,
    iterations: int,
    dt: float,
    dx: int = 1,
    dy: int = 1,
    h_prev: Tensor | None = None,
    forcing: bool = True,
    compiled: bool = False,
) -> Tensor:
    """:func:`pdenas.nn.functional.global_pde` on the fused path (same arguments, same numbers).

    The fields must be Python floats or tensors of ``f``'s shape, dtype and device. With
    ``compiled`` the forward and backward run as compiled kernels (see :mod:`pdenas.nn._compile`).
    """
    compiled = compiled and not CompiledOrEager.failed
    opts = Options(iterations, float(dt), dx, dy, forcing, compiled)
    h_prev = f if h_prev is None else h_prev
    inputs = (f, h, h_prev, u, v, Dx, Dy)
    if torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in inputs):
        return GlobalPDEFunction.apply(f, h, h_prev, u, v, Dx, Dy, opts)
    if compiled:
        return _compiled_last(f, h, h_prev, u, v, Dx, Dy, *opts[:5])
    # small maps: one operation per neighbour (torch.roll copies) instead of per-segment views
    shifts = _ROLLED if is_small(f) else _SEGMENTS
    if iterations == 1 and h_prev is f and forcing and all(isinstance(x, Tensor) for x in (u, v, Dx, Dy)):
        return single_step(f, h, u, v, Dx, Dy, opts, shifts=shifts)
    co = coefficients(f, u, v, Dx, Dy, opts, fold_source=h_prev is f)
    return solve(h, h_prev, co, opts, keep_states=False, shifts=shifts)[-1]


_SEGMENTS = SegmentShifts()
_ROLLED = RolledShifts()


def single_step(
    f: Tensor, h: Tensor, u: Tensor, v: Tensor, Dx: Tensor, Dy: Tensor, opts: Options,
    *, shifts: SegmentShifts | RolledShifts = _SEGMENTS,
) -> Tensor:
    """One step from ``H_{-1} = f`` without materialising the fields (inference, the paper's K = 1).

    With the fields written out, ``H_1 = X / den - f`` where ``den = 1 + 2Bx + 2By`` and

        X = (2 + 2 dt) f + 2Bx (S_H^+ h + S_H^- h) + Ax (S_H^- h - S_H^+ h) - Ax' h (S_H^+ u - S_H^- u)
            + (the same along W with By, Ay, v),                     Ax' = dt / dx,

    18 passes over the feature map into two buffers, against about 24 passes and 9 buffers when the
    seven fields are computed first.
    """
    dt, dx, dy = opts.dt, opts.dx, opts.dy
    X = torch.mul(f, 2.0 + 2.0 * dt)  # (B, C, H, W)
    T = torch.empty_like(X)  # (B, C, H, W) scratch
    for x_dim, shift, diff, vel, gam, al in ((2, dx, Dx, u, 2 * dt / dx**2, dt / dx), (3, dy, Dy, v, 2 * dt / dy**2, dt / dy)):
        X.addcmul_(diff, shifts.pair(h, shift, x_dim, sign=1.0, out=T), value=gam)
        X.addcmul_(vel, shifts.pair(h, -shift, x_dim, sign=-1.0, out=T), value=al)
        X.addcmul_(h, shifts.pair(vel, shift, x_dim, sign=-1.0, out=T), value=-al)
    den = torch.mul(Dx, 2 * dt / dx**2, out=T).add_(Dy, alpha=2 * dt / dy**2).add_(1.0)
    return X.div_(den).sub_(f)


def coefficients(
    f: Tensor, u: Field, v: Field, Dx: Field, Dy: Field, opts: Options, *, fold_source: bool = False
) -> Coefficients:
    """The fields of one step, each computed once with in-place arithmetic.

    With ``fold_source`` (one iteration and ``H_{-1} = f``) the step's ``a f + 2 dt D f`` is one
    product: ``a`` is None and ``s`` holds the factor ``(2 + 2 dt) D - 1`` of f.
    """
    dt, dx, dy = opts.dt, opts.dx, opts.dy
    gam_h, gam_w = 2 * dt / dx**2, 2 * dt / dy**2  # 2Bx = gam_h Dx, 2By = gam_w Dy
    al_h, al_w = dt / dx, dt / dy  # Ax = al_h u, Ay = al_w v
    # D = 1 / (1 + 2Bx + 2By)
    if isinstance(Dx, Tensor):
        den = torch.mul(Dx, gam_h)  # (B, C, H, W)
        if isinstance(Dy, Tensor):
            den.add_(Dy, alpha=gam_w).add_(1.0)
        else:
            den.add_(1.0 + gam_w * Dy)
        D: Field = den.reciprocal_()
    elif isinstance(Dy, Tensor):
        D = torch.mul(Dy, gam_w).add_(1.0 + gam_h * Dx).reciprocal_()
    else:
        D = 1.0 / (1.0 + gam_h * Dx + gam_w * Dy)
    # b = -2 D E, E = dt (S_H^+ u - S_H^- u) / (2 dx) + dt (S_W^+ v - S_W^- v) / (2 dy)
    b: Field = 0.0
    if isinstance(u, Tensor):
        b = diff_rolled(u, dx, 2, scale=-al_h)  # (B, C, H, W)
    if isinstance(v, Tensor):
        b = diff_rolled(v, dy, 3, scale=-al_w, out=b if isinstance(b, Tensor) else None)
    if isinstance(b, Tensor):
        b = b.mul_(D)
    # c_h± = D 2Bx ∓ D Ax, c_w± = D 2By ∓ D Ay
    c_hp, c_hm = _pair(D, Dx, gam_h, u, al_h)
    c_wp, c_wm = _pair(D, Dy, gam_w, v, al_w)
    fold = fold_source and opts.forcing and opts.iterations == 1
    a: Field | None = None
    if not fold:
        a = torch.mul(D, 2.0).sub_(1.0) if isinstance(D, Tensor) else 2.0 * D - 1.0
    s: Field | None = None
    if fold:  # a + 2 dt D = (2 + 2 dt) D - 1, the factor of f
        s = torch.mul(D, 2.0 + 2 * dt).sub_(1.0) if isinstance(D, Tensor) else (2.0 + 2 * dt) * D - 1.0
    elif opts.forcing:
        s = torch.mul(f, D).mul_(2 * dt) if isinstance(D, Tensor) else torch.mul(f, 2 * dt * D)
    return Coefficients(D, a, b, c_hp, c_hm, c_wp, c_wm, s)


def _pair(D: Field, diff: Field, gam: float, vel: Field, al: float) -> tuple[Field, Field]:
    """``(D gam diff - D al vel, D gam diff + D al vel)``: the factors of the two neighbours along one axis."""
    base = _mul(D, diff)
    base = base.mul_(gam) if isinstance(base, Tensor) else base * gam
    if not isinstance(vel, Tensor) and vel == 0.0:
        return base, base
    if isinstance(D, Tensor) and isinstance(vel, Tensor) and isinstance(base, Tensor):
        minus = torch.addcmul(base, D, vel, value=-al)  # (B, C, H, W)
        return minus, base.addcmul_(D, vel, value=al)
    adv = _mul(D, vel)
    adv = adv.mul_(al) if isinstance(adv, Tensor) else adv * al
    return _add(base, adv, -1.0), _add(base, adv, 1.0)


def solve(
    h: Tensor, h_prev: Tensor, co: Coefficients, opts: Options, *, keep_states: bool,
    shifts: SegmentShifts | RolledShifts = _SEGMENTS,
) -> list[Tensor]:
    """Run the iterations; returns ``[H_{-1}, H_0, ..., H_K]`` (only the last two unless ``keep_states``)."""
    dx, dy = opts.dx, opts.dy
    states = [h_prev, h]
    for k in range(opts.iterations):
        H_prev, H = states[-2], states[-1]
        # a H_{k-1} + s, into the buffer of H_{k-1} once inference no longer needs it
        reuse = None if keep_states or k < 2 else H_prev
        if co.a is None:  # folded: s is the factor of H_{-1} = f
            out = _axpy(co.s, H_prev, None, out=reuse)  # (B, C, H, W)
        else:
            out = _axpy(co.a, H_prev, co.s, out=reuse)
        if isinstance(co.b, Tensor):
            out.addcmul_(co.b, H)
        elif co.b != 0.0:
            out.add_(H, alpha=co.b)
        shifts.fma_(out, co.c_hp, H, dx, 2)
        shifts.fma_(out, co.c_hm, H, -dx, 2)
        shifts.fma_(out, co.c_wp, H, dy, 3)
        shifts.fma_(out, co.c_wm, H, -dy, 3)
        states.append(out)
        if not keep_states:
            states = states[-2:]
    return states


class GlobalPDEFunction(torch.autograd.Function):
    """``H_K`` of the scheme with the adjoint backward (see the module docstring).

    ``apply(f, h, h_prev, u, v, Dx, Dy, opts)``; u, v, Dx, Dy may be Python floats. When ``h`` or
    ``h_prev`` is ``f`` itself (the layer's default) the gradients are summed here, in place.
    """

    @staticmethod
    def forward(ctx, f, h, h_prev, u, v, Dx, Dy, opts):  # type: ignore[override]
        ctx.opts = opts
        ctx.aliases = (h is f, h_prev is f, h_prev is h)
        if opts.compiled:  # the fields but D are recomputed inside the compiled backward, not saved
            new_states, D = _compiled_states(f, h, h_prev, u, v, Dx, Dy, *opts[:5])
            states = [h_prev, h, *new_states]
            fields = (D, u, v, Dx, Dy)
            ctx.floats = [None if isinstance(x, Tensor) else x for x in fields]
            ctx.save_for_backward(f, *[x for x in fields if isinstance(x, Tensor)], *states)
            return states[-1]
        co = coefficients(f, u, v, Dx, Dy, opts, fold_source=h_prev is f)
        states = solve(h, h_prev, co, opts, keep_states=True)  # [H_{-1}, H_0, ..., H_K]
        fields = (u, v, Dx, Dy, co.D, co.b, co.c_hp, co.c_hm, co.c_wp, co.c_wm)
        ctx.floats = [None if isinstance(x, Tensor) else x for x in fields]
        ctx.save_for_backward(f, *[x for x in fields if isinstance(x, Tensor)], *states)
        return states[-1]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        saved = list(ctx.saved_tensors)
        f = saved.pop(0)
        fields = [saved.pop(0) if x is None else x for x in ctx.floats]
        if ctx.opts.compiled:
            if grad.stride() != saved[-1].stride():
                grad = torch.empty_like(saved[-1]).copy_(grad)  # (B, C, H, W) laid out like the states
            D, u, v, Dx, Dy = fields
            grads = _compiled_grads(
                grad, saved, D, f, u, v, Dx, Dy, *ctx.opts[:5], tuple(ctx.needs_input_grad[:7]), ctx.aliases
            )
            return (*grads, None)
        grads = _adjoint(grad, saved, f, *fields, opts=ctx.opts, need=ctx.needs_input_grad[:7], aliases=ctx.aliases)
        return (*grads, None)


def _adjoint(
    grad: Tensor,
    states: list[Tensor],
    f: Tensor,
    u: Field,
    v: Field,
    Dx: Field,
    Dy: Field,
    D: Field,
    b: Field,
    c_hp: Field,
    c_hm: Field,
    c_wp: Field,
    c_wm: Field,
    *,
    opts: Options,
    need: tuple[bool, ...],
    aliases: tuple[bool, bool, bool],
) -> tuple[Tensor | None, ...]:
    """Gradients w.r.t. ``(f, h, h_prev, u, v, Dx, Dy)`` by the adjoint iteration."""
    need_f, need_h, need_hp, need_u, need_v, need_Dx, need_Dy = need
    h_is_f, hp_is_f, hp_is_h = aliases
    dt, dx, dy, K = opts.dt, opts.dx, opts.dy, opts.iterations
    out = states[-1]
    if grad.stride() != out.stride():
        grad = torch.empty_like(out).copy_(grad)  # (B, C, H, W) laid out like the states
    D_tensor = isinstance(D, Tensor)
    # which accumulated field gradients are needed (D_x, D_y reach every field through D)
    want_D = D_tensor and (need_Dx or need_Dy)
    want_h = isinstance(c_hp, Tensor) and (need_u or need_Dx or want_D)
    want_w = isinstance(c_wp, Tensor) and (need_v or need_Dy or want_D)
    want_b = isinstance(b, Tensor) and (need_u or need_v)
    want_s = opts.forcing and (need_f or want_D)
    need_lam0 = need_h or (h_is_f and need_f)
    a: Field = 0.0
    if K > 1:
        a = torch.mul(D, 2.0).sub_(1.0) if D_tensor else 2.0 * D - 1.0
    acc = _Accumulators()

    lam_next: Tensor | None = None  # l_{k+2}
    lam = grad  # l_{k+1}
    for k in range(K - 1, -1, -1):
        H_prev, H, H_next = states[k], states[k + 1], states[k + 2]
        if want_D:
            acc.fma("a", lam, H_prev)  # dL/da; a = 2D - 1 only reaches D
            acc.fma("q", lam, H_next)  # Q = sum l_{k+1} H_{k+1}
        if want_b:
            acc.fma("b", lam, H)
        if want_h:
            acc.fma_rolled("hp", lam, H, dx, 2)
            acc.fma_rolled("hm", lam, H, -dx, 2)
        if want_w:
            acc.fma_rolled("wp", lam, H, dy, 3)
            acc.fma_rolled("wm", lam, H, -dy, 3)
        if want_s:
            acc.add("s", lam)
        if k == 0 and not need_lam0:
            lam_next, lam = lam, None
            break
        # l_k = b l_{k+1} + sum_j S_j^T (c_j l_{k+1}) + a l_{k+2}, into l_{k+2}'s buffer when it is ours
        if lam_next is None:
            new = _axpy(b, lam, None)  # (B, C, H, W)
        else:
            new = _axpy(a, lam_next, None, out=None if lam_next is grad else lam_next)
            if isinstance(b, Tensor):
                new.addcmul_(b, lam)
            elif b != 0.0:
                new.add_(lam, alpha=b)
        fma_rolled_(new, c_hp, lam, -dx, 2, roll_coef=True)
        fma_rolled_(new, c_hm, lam, dx, 2, roll_coef=True)
        fma_rolled_(new, c_wp, lam, -dy, 3, roll_coef=True)
        fma_rolled_(new, c_wm, lam, dy, 3, roll_coef=True)
        lam_next, lam = lam, new
    lam1 = lam_next  # l_1; lam = l_0 (ours) or None

    # inputs f, h, h_prev: dL/dh = l_0, dL/dh_prev = (2D - 1) l_1, dL/df (source) = 2 dt D sum_k l_{k+1}
    g_f = g_h = g_hp = None
    if need_lam0:
        g_h = lam
    if need_hp:
        if hp_is_h and g_h is not None:
            _add_scaled_(g_h, D, lam1, 2.0).sub_(lam1)
        else:
            g_hp = _axpy(D, lam1, None).mul_(2.0).sub_(lam1)
    if need_f and opts.forcing:
        gS = acc["s"]
        if h_is_f and g_h is not None:
            _add_scaled_(g_h, D, gS, 2 * dt)
        elif acc.owns("s"):
            g_f = gS.mul_(D).mul_(2 * dt) if D_tensor else gS.mul_(2 * dt * D)
        else:
            g_f = _axpy(D, gS, None).mul_(2 * dt)
    if h_is_f and g_h is not None and need_f:
        g_f, g_h = g_h, None  # f, h (and h_prev) are one tensor: one summed gradient
        if hp_is_f:
            g_hp = None

    # fields: c_j = D n_j, so dL/dD = Q / D and dL/dden = -D Q; with 2Bx = gam_h Dx, Ax = al_h u,
    # dL/dDx = gam_h D (gHP + gHM - gA - Q), dL/du = al_h D (gHM - gHP) + (advection through E)
    g_u = g_v = g_Dx = g_Dy = None
    aq = None
    if want_D:
        aq = acc.pop("q").add_(acc.pop("a"))  # (B, C, H, W)
    g_u, g_Dx = _axis_grads(acc, "hp", "hm", D, aq, need_u and isinstance(u, Tensor), need_Dx, 2 * dt / dx**2, dt / dx)
    g_v, g_Dy = _axis_grads(acc, "wp", "wm", D, aq, need_v and isinstance(v, Tensor), need_Dy, 2 * dt / dy**2, dt / dy)
    if want_b:
        # b = -2 D E: dL/dE = -2 D gB; E = dt (S_H^+ u - S_H^- u) / (2 dx) + (v along W) has the adjoint
        # dL/du = dt / (2 dx) (S_H^- - S_H^+) dL/dE = dt / dx (S_H^+ - S_H^-) (D gB)
        DgB = acc.pop("b").mul_(D)  # (B, C, H, W)
        if g_u is not None:
            diff_rolled(DgB, dx, 2, scale=dt / dx, out=g_u)
        if g_v is not None:
            diff_rolled(DgB, dy, 3, scale=dt / dy, out=g_v)
    return g_f, g_h, g_hp, g_u, g_v, g_Dx, g_Dy


def _axis_grads(
    acc: "_Accumulators", plus: str, minus: str, D: Field, aq: Tensor | None,
    need_vel: bool, need_diff: bool, gam: float, al: float,
) -> tuple[Tensor | None, Tensor | None]:
    """``(al D (g_minus - g_plus), gam D (g_plus + g_minus - aq))``, in the accumulators' buffers."""
    if not (need_vel or need_diff) or plus not in acc:
        return None, None
    gp, gm = acc[plus], acc[minus]
    g_vel = g_diff = None
    if need_vel:
        g_vel = gm.sub_(gp)  # g_minus - g_plus, in place
        if need_diff:
            g_diff = torch.add(g_vel, gp, alpha=2.0, out=gp)  # g_plus + g_minus
        g_vel.mul_(D).mul_(al)
    else:
        g_diff = gp.add_(gm)
    if g_diff is not None:
        g_diff.sub_(aq).mul_(D).mul_(gam)
    return g_vel, g_diff


class _Accumulators(dict):
    """Named running sums of products, allocated on first use (the first term is written, not added)."""

    def __init__(self) -> None:
        super().__init__()
        self._aliased: set[str] = set()

    def owns(self, name: str) -> bool:
        return name in self and name not in self._aliased

    def fma(self, name: str, x: Tensor, y: Tensor) -> None:
        if name in self:
            self[name].addcmul_(x, y)
        else:
            self[name] = torch.mul(x, y)

    def fma_rolled(self, name: str, x: Tensor, y: Tensor, shift: int, dim: int) -> None:
        if name in self:
            fma_rolled_(self[name], x, y, shift, dim)
        else:
            self[name] = mul_rolled(x, y, shift, dim)

    def add(self, name: str, x: Tensor) -> None:
        if name not in self:
            self[name] = x  # aliased until a second term arrives
            self._aliased.add(name)
        elif name in self._aliased:
            self[name] = torch.add(self[name], x)
            self._aliased.discard(name)
        else:
            self[name].add_(x)


def _add_scaled_(out: Tensor, coef: Field, x: Tensor, scale: float) -> Tensor:
    """``out += scale * coef * x`` in place."""
    if isinstance(coef, Tensor):
        return out.addcmul_(coef, x, value=scale)
    return out.add_(x, alpha=scale * coef)


def _axpy(coef: Field, x: Tensor, base: Field | None, *, out: Tensor | None = None) -> Tensor:
    """``coef * x + base`` as a new tensor (or into ``out``, which may alias ``x``)."""
    kwargs = {"out": out} if out is not None else {}
    if base is None:
        if isinstance(coef, Tensor):
            return torch.mul(coef, x, **kwargs)
        return torch.mul(x, coef, **kwargs)
    if isinstance(coef, Tensor):
        return torch.addcmul(base, coef, x, **kwargs)
    return torch.add(base, x, alpha=coef, **kwargs)


def _mul(x: Field, y: Field) -> Field:
    if isinstance(x, Tensor):
        return torch.mul(x, y)
    if isinstance(y, Tensor):
        return torch.mul(y, x)
    return x * y


def _add(x: Field, y: Field, alpha: float) -> Field:
    """``x + alpha * y``."""
    if isinstance(x, Tensor):
        return torch.add(x, y, alpha=alpha)
    if isinstance(y, Tensor):
        return torch.mul(y, alpha).add_(x)
    return x + alpha * y
