"""The Global layer's PDE solver (Kag & Saligrama, "Condensing CNNs with Partial Differential
Equations", CVPR 2022, Sec. 3.2, Eq. 6-8).

The layer integrates the advection-diffusion equation

    dH/dt = f - div(V H) + div(D grad H),   V = (u, v),  D = (D_x, D_y)

on the feature map with an explicit, periodic (wrap-around) finite-difference scheme. With
``S_H^+ X = roll(X, dx, dims=2)`` (it holds ``X[i - dx]``), ``S_H^-`` the shift by ``-dx`` and
``S_W^±`` the same along dim 3 with ``dy``, one step reads

    H_new = D * ((1 - 2Bx - 2By) H_prev - 2 E H
                 + (-Ax + 2Bx) S_H^+ H + (Ax + 2Bx) S_H^- H
                 + (-Ay + 2By) S_W^+ H + (Ay + 2By) S_W^- H) + D 2 dt f

with ``Ax = u dt/dx``, ``Ay = v dt/dy``, ``Bx = Dx dt/dx^2``, ``By = Dy dt/dy^2``,
``E = dt (d_x u + d_y v)`` (central differences) and ``D = 1 / (1 + 2Bx + 2By)``.

:func:`global_pde_reference` writes these lines literally; :func:`global_pde` computes the same
numbers with the stencil coefficients folded once per call, since they do not change across
iterations: by default on the fused path of :mod:`pdenas.nn._fast_pde` (in-place passes, shifted
views instead of ``torch.roll`` copies, and a custom autograd Function whose backward is the adjoint
iteration). While ``torch.export`` or ``torch.compile`` captures the graph, or ``torch.jit`` traces with
autograd on (the custom Function cannot be recorded), it runs the same arithmetic as plain tensor
operations (:func:`global_pde_unfused`), which the compiler can fuse; a ``torch.jit`` trace without
autograd (TorchScript export) records the fused in-place passes.
"""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor

from ._compile import compile_enabled
from ._fast_pde import global_pde_fast

__all__ = ["global_layer_reference", "global_pde", "global_pde_reference", "global_pde_unfused", "stencil_coefficients"]

Field = Union[Tensor, float]


def global_pde(
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
) -> Tensor:
    """Run ``iterations`` explicit steps of the advection-diffusion scheme and return H.

    Args:
        f: the forcing term, (B, C, H, W).
        h: the initial state H_0, (B, C, H, W).
        u, v: velocity fields along H and W, (B, C, H, W) or Python floats (constant).
        Dx, Dy: diffusion fields, (B, C, H, W) or Python floats (constant diffusion).
        iterations: K >= 1.
        dt, dx, dy: time step and grid spacing (integer shifts, wrap-around).
        h_prev: the state before ``h``; ``f`` when None, as in the paper's code.
        forcing: when False the ``D * 2 * dt * f`` source term is dropped.
    """
    _check_args(f, h, iterations, dx, dy)
    if _fast_path_applies(f, h, h_prev, (u, v, Dx, Dy)):
        return global_pde_fast(
            f, h, u, v, Dx, Dy, iterations=iterations, dt=dt, dx=dx, dy=dy, h_prev=h_prev, forcing=forcing,
            compiled=compile_enabled(f.device) and not torch.jit.is_tracing(),
        )
    return global_pde_unfused(
        f, h, u, v, Dx, Dy, iterations=iterations, dt=dt, dx=dx, dy=dy, h_prev=h_prev, forcing=forcing
    )


def global_pde_unfused(
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
) -> Tensor:
    """:func:`global_pde` as plain tensor operations (coefficients folded once, ``torch.roll`` shifts).

    What tracers and compilers see; autograd differentiates it op by op.
    """
    _check_args(f, h, iterations, dx, dy)
    c_prev, c_mid, c_hp, c_hm, c_wp, c_wm, D = stencil_coefficients(u, v, Dx, Dy, dt=dt, dx=dx, dy=dy)
    source = D * (2 * dt) * f if forcing else None  # (B, C, H, W), constant across iterations
    H = h
    H_prev = f if h_prev is None else h_prev
    for _ in range(iterations):
        H_new = c_prev * H_prev + c_mid * H
        H_new = H_new + c_hp * torch.roll(H, dx, dims=2) + c_hm * torch.roll(H, -dx, dims=2)
        H_new = H_new + c_wp * torch.roll(H, dy, dims=3) + c_wm * torch.roll(H, -dy, dims=3)
        if source is not None:
            H_new = H_new + source
        H_prev, H = H, H_new
    return H


def stencil_coefficients(
    u: Field, v: Field, Dx: Field, Dy: Field, *, dt: float, dx: int = 1, dy: int = 1
) -> tuple[Field, Field, Field, Field, Field, Field, Field]:
    """The scheme's coefficient fields with D folded in.

    Returns ``(c_prev, c_mid, c_hp, c_hm, c_wp, c_wm, D)``: the factors of H_prev, H, S_H^+ H,
    S_H^- H, S_W^+ H and S_W^- H in one step, and D itself (for the source term).
    """
    Ax = u * (dt / dx)
    Ay = v * (dt / dy)
    Bx = Dx * (dt / dx**2)
    By = Dy * (dt / dy**2)
    E = (_central_difference(u, dx, dim=2, spacing=dx) + _central_difference(v, dy, dim=3, spacing=dy)) * dt
    D = 1.0 / (1 + 2 * Bx + 2 * By)
    c_prev = D * (1 - 2 * Bx - 2 * By)
    c_mid = D * (-2 * E)
    c_hp = D * (-Ax + 2 * Bx)
    c_hm = D * (Ax + 2 * Bx)
    c_wp = D * (-Ay + 2 * By)
    c_wm = D * (Ay + 2 * By)
    return c_prev, c_mid, c_hp, c_hm, c_wp, c_wm, D


def global_pde_reference(
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
) -> Tensor:
    """The scheme written line by line as the paper's public code computes it (the reference)."""
    _check_args(f, h, iterations, dx, dy)
    Ax = u * dt / dx
    Ay = v * dt / dy
    Bx = Dx * dt / dx**2
    By = Dy * dt / dy**2
    ux = _central_difference(u, dx, dim=2, spacing=dx)
    vy = _central_difference(v, dy, dim=3, spacing=dy)
    E = (ux + vy) * dt
    D = 1 / (1 + 2 * Bx + 2 * By)
    H = h
    H_prev = f if h_prev is None else h_prev
    for _ in range(iterations):
        H_new = D * (
            (1 - 2 * Bx - 2 * By) * H_prev
            - 2 * E * H
            + (-Ax + 2 * Bx) * torch.roll(H, dx, dims=2)
            + (Ax + 2 * Bx) * torch.roll(H, -dx, dims=2)
            + (-Ay + 2 * By) * torch.roll(H, dy, dims=3)
            + (Ay + 2 * By) * torch.roll(H, -dy, dims=3)
        )
        if forcing:
            H_new = H_new + D * 2 * dt * f
        H_prev, H = H, H_new
    return H


def global_layer_reference(layer: torch.nn.Module, f: Tensor) -> Tensor:
    """A :class:`~pdenas.nn.GlobalLayer`'s forward as the paper's public code computes it: the init block,
    the coefficient branches as modules (conv, BN, ReLU), :func:`global_pde_reference`, BN, ReLU
    (+ f when residual). What every faster form is tested and benchmarked against."""
    cfg = layer.config
    h = layer.init_block(f)
    u = layer.u(h) if layer.u is not None else 0.0
    v = layer.v(h) if layer.v is not None else 0.0
    Dx = layer.diff_x(h) if layer.diff_x is not None else cfg.cdx
    Dy = layer.diff_y(h) if layer.diff_y is not None else cfg.cdy
    H = global_pde_reference(
        f, h, u, v, Dx, Dy, iterations=cfg.iterations, dt=cfg.dt, dx=cfg.dx, dy=cfg.dy, forcing=cfg.forcing
    )
    out = torch.relu(layer.bn_out(H))
    return out + f if cfg.residual else out


def _central_difference(x: Field, shift: int, *, dim: int, spacing: int) -> Field:
    """(S^+ x - S^- x) / (2 * spacing) with wrap-around; zero for a constant field."""
    if not isinstance(x, Tensor):
        return 0.0
    return (torch.roll(x, shift, dims=dim) - torch.roll(x, -shift, dims=dim)) / (2 * spacing)


def _fast_path_applies(f: Tensor, h: Tensor, h_prev: Tensor | None, fields: tuple[Field, ...]) -> bool:
    """The fused path needs eager execution (or a ``torch.jit`` trace without autograd) and fields that are
    floats or tensors shaped like f."""
    if torch.compiler.is_exporting() or torch.compiler.is_compiling():
        return False
    if torch.jit.is_tracing() and torch.is_grad_enabled():
        return False
    if not f.is_floating_point():
        return False
    for t in (h, h_prev, *fields):
        if isinstance(t, Tensor) and (t.shape != f.shape or t.dtype != f.dtype or t.device != f.device):
            return False
        if t is not None and not isinstance(t, (Tensor, float, int)):
            return False
    return True


def _check_args(f: Tensor, h: Tensor, iterations: int, dx: int, dy: int) -> None:
    if f.dim() != 4 or h.shape != f.shape:
        raise ValueError(
            f"global_pde expects f and h of the same shape (B, C, H, W), got {tuple(f.shape)} and {tuple(h.shape)}"
        )
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if dx < 1 or dy < 1:
        raise ValueError(f"dx and dy must be integers >= 1, got dx={dx}, dy={dy}")
