"""The solver's forward and adjoint backward as pure tensor functions, for ``torch.compile``
(Kag & Saligrama, CVPR 2022, Sec. 3.2, Eq. 8).

Same mathematics as :mod:`pdenas.nn._fast_pde` (see its docstring for the adjoint iteration), written
without in-place updates or views so that a compiler can fuse each function into a few loops:

* :func:`pde_states` computes the step's fields and runs the K iterations, returning the states
  ``H_1 .. H_K`` (the backward needs them);
* :func:`pde_grads` recomputes the fields from u, v, D_x, D_y inside the fused loops instead of
  saving them (recomputing is free next to a memory pass), runs the adjoint iteration and chains
  the fields' gradients to the inputs.

:class:`pdenas.nn._fast_pde.GlobalPDEFunction` calls their compiled forms when compilation is on
(:mod:`pdenas.nn._compile`); each is compiled once per shape and option set, with no autograd inside.
"""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor

__all__ = ["pde_states", "pde_last", "pde_grads"]

Field = Union[Tensor, float]


def _fields(
    f: Tensor, u: Field, v: Field, Dx: Field, Dy: Field, dt: float, dx: int, dy: int, forcing: bool,
    D: Field | None = None,
):
    gam_h, gam_w = 2 * dt / dx**2, 2 * dt / dy**2
    al_h, al_w = dt / dx, dt / dy
    if D is None:
        D = 1.0 / (1.0 + gam_h * Dx + gam_w * Dy)
    a = 2.0 * D - 1.0
    b = 0.0
    if isinstance(u, Tensor):
        b = b - al_h * (torch.roll(u, dx, 2) - torch.roll(u, -dx, 2))
    if isinstance(v, Tensor):
        b = b - al_w * (torch.roll(v, dy, 3) - torch.roll(v, -dy, 3))
    b = b * D
    c_hp = D * (gam_h * Dx - al_h * u)
    c_hm = D * (gam_h * Dx + al_h * u)
    c_wp = D * (gam_w * Dy - al_w * v)
    c_wm = D * (gam_w * Dy + al_w * v)
    s = (2 * dt) * D * f if forcing else None
    return D, a, b, c_hp, c_hm, c_wp, c_wm, s


def pde_states(
    f: Tensor, h: Tensor, h_prev: Tensor, u: Field, v: Field, Dx: Field, Dy: Field,
    iterations: int, dt: float, dx: int, dy: int, forcing: bool,
) -> tuple[list[Tensor], Field]:
    """``([H_1, ..., H_K], D)``; the backward reads D instead of recomputing its reciprocal at every neighbour."""
    D, a, b, c_hp, c_hm, c_wp, c_wm, s = _fields(f, u, v, Dx, Dy, dt, dx, dy, forcing)
    H_prev, H = h_prev, h
    states = []
    for _ in range(iterations):
        H_new = (
            a * H_prev + b * H
            + c_hp * torch.roll(H, dx, 2) + c_hm * torch.roll(H, -dx, 2)
            + c_wp * torch.roll(H, dy, 3) + c_wm * torch.roll(H, -dy, 3)
        )  # (B, C, H, W)
        if s is not None:
            H_new = H_new + s
        states.append(H_new)
        H_prev, H = H, H_new
    return states, D


def pde_last(
    f: Tensor, h: Tensor, h_prev: Tensor, u: Field, v: Field, Dx: Field, Dy: Field,
    iterations: int, dt: float, dx: int, dy: int, forcing: bool,
) -> Tensor:
    """``H_K`` only (inference: the intermediate states need not be written out)."""
    return pde_states(f, h, h_prev, u, v, Dx, Dy, iterations, dt, dx, dy, forcing)[0][-1]


def pde_grads(
    grad: Tensor, states: list[Tensor], D: Field, f: Tensor, u: Field, v: Field, Dx: Field, Dy: Field,
    iterations: int, dt: float, dx: int, dy: int, forcing: bool,
    need: tuple[bool, ...], aliases: tuple[bool, bool, bool],
) -> list[Tensor | None]:
    """Gradients w.r.t. ``(f, h, h_prev, u, v, Dx, Dy)``; ``states`` is ``[H_{-1}, H_0, ..., H_K]``."""
    need_f, need_h, need_hp, need_u, need_v, need_Dx, need_Dy = need
    h_is_f, hp_is_f, hp_is_h = aliases
    D, a, b, c_hp, c_hm, c_wp, c_wm, _ = _fields(f, u, v, Dx, Dy, dt, dx, dy, False, D)
    zero = torch.zeros_like(grad)
    gA = gQ = gB = gHP = gHM = gWP = gWM = gS = zero
    lam_next: Tensor | None = None
    lam = grad
    for k in range(iterations - 1, -1, -1):
        H_prev, H, H_next = states[k], states[k + 1], states[k + 2]
        gA = gA + lam * H_prev
        gQ = gQ + lam * H_next
        gB = gB + lam * H
        gHP = gHP + lam * torch.roll(H, dx, 2)
        gHM = gHM + lam * torch.roll(H, -dx, 2)
        gWP = gWP + lam * torch.roll(H, dy, 3)
        gWM = gWM + lam * torch.roll(H, -dy, 3)
        gS = gS + lam
        new = (
            b * lam
            + torch.roll(c_hp * lam, -dx, 2) + torch.roll(c_hm * lam, dx, 2)
            + torch.roll(c_wp * lam, -dy, 3) + torch.roll(c_wm * lam, dy, 3)
        )
        if lam_next is not None:
            new = new + a * lam_next
        lam_next, lam = lam, new
    lam0, lam1 = lam, lam_next
    g_h = lam0
    g_hp = a * lam1
    g_f = (2 * dt) * D * gS if forcing else None
    if hp_is_h:
        g_h, g_hp = g_h + g_hp, None
    if h_is_f:
        g_f, g_h = (g_h if g_f is None else g_f + g_h), None
        if hp_is_f:
            g_hp = None
    g_u = g_v = g_Dx = g_Dy = None
    aq = gQ + gA
    DgB = D * gB
    if need_u and isinstance(u, Tensor):
        g_u = (dt / dx) * D * (gHM - gHP) + (dt / dx) * (torch.roll(DgB, dx, 2) - torch.roll(DgB, -dx, 2))
    if need_v and isinstance(v, Tensor):
        g_v = (dt / dy) * D * (gWM - gWP) + (dt / dy) * (torch.roll(DgB, dy, 3) - torch.roll(DgB, -dy, 3))
    if need_Dx and isinstance(Dx, Tensor):
        g_Dx = (2 * dt / dx**2) * D * (gHP + gHM - aq)
    if need_Dy and isinstance(Dy, Tensor):
        g_Dy = (2 * dt / dy**2) * D * (gWP + gWM - aq)
    grads = [g_f, g_h, g_hp, g_u, g_v, g_Dx, g_Dy]
    return [g if n else None for g, n in zip(grads, need)]
