"""The solver must match the issue's formula line by line, to float32 rounding."""

import pytest
import torch

from pdenas.nn.functional import global_pde, global_pde_reference


def literal(f, h, u, v, Dx, Dy, *, iterations, dt, dx=1, dy=1, h_prev=None):
    """The issue's lines, transcribed without any rearrangement."""
    SHp = lambda X: torch.roll(X, dx, dims=2)  # noqa: E731
    SHm = lambda X: torch.roll(X, -dx, dims=2)  # noqa: E731
    SWp = lambda X: torch.roll(X, dy, dims=3)  # noqa: E731
    SWm = lambda X: torch.roll(X, -dy, dims=3)  # noqa: E731
    Ax = u * dt / dx
    Ay = v * dt / dy
    Bx = Dx * dt / dx**2
    By = Dy * dt / dy**2
    ux = (SHp(u) - SHm(u)) / (2 * dx)
    vy = (SWp(v) - SWm(v)) / (2 * dy)
    E = (ux + vy) * dt
    D = 1 / (1 + 2 * Bx + 2 * By)
    H = h
    Hprev = f if h_prev is None else h_prev
    for _ in range(iterations):
        Hnew = D * (
            (1 - 2 * Bx - 2 * By) * Hprev
            - 2 * E * H
            + (-Ax + 2 * Bx) * SHp(H)
            + (Ax + 2 * Bx) * SHm(H)
            + (-Ay + 2 * By) * SWp(H)
            + (Ay + 2 * By) * SWm(H)
        ) + D * 2 * dt * f
        Hprev, H = H, Hnew
    return H


def _fields(shape, seed, *, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    f, h = (torch.randn(shape, generator=g) for _ in range(2))
    u, v, Dx, Dy = (torch.rand(shape, generator=g) * 0.5 for _ in range(4))
    tensors = [f, h, u, v, Dx, Dy]
    if requires_grad:
        for t in tensors:
            t.requires_grad_(True)
    return tensors


CASES = [
    ((2, 3, 8, 8), 1, 0.2, 1, 1),
    ((1, 4, 7, 5), 3, 0.1, 1, 1),
    ((2, 2, 9, 12), 5, 0.35, 2, 1),
    ((3, 1, 6, 6), 6, 0.05, 1, 3),
]


@pytest.mark.parametrize("shape,iterations,dt,dx,dy", CASES)
@pytest.mark.parametrize("impl", [global_pde, global_pde_reference], ids=["global_pde", "reference"])
def test_matches_literal_formula(impl, shape, iterations, dt, dx, dy):
    f, h, u, v, Dx, Dy = _fields(shape, seed=iterations)
    expected = literal(f, h, u, v, Dx, Dy, iterations=iterations, dt=dt, dx=dx, dy=dy)
    got = impl(f, h, u, v, Dx, Dy, iterations=iterations, dt=dt, dx=dx, dy=dy)
    scale = expected.abs().max().item()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6 * max(scale, 1.0))


def test_h_prev_and_constant_diffusion():
    f, h, u, v, _, _ = _fields((2, 3, 8, 8), seed=1)
    h_prev = torch.randn(2, 3, 8, 8)
    expected = literal(f, h, u, v, 0.7, 0.4, iterations=4, dt=0.1, h_prev=h_prev)
    got = global_pde(f, h, u, v, 0.7, 0.4, iterations=4, dt=0.1, h_prev=h_prev)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_forcing_off_drops_source_term():
    f, h, u, v, Dx, Dy = _fields((1, 2, 6, 6), seed=2)
    with_f = global_pde(f, h, u, v, Dx, Dy, iterations=1, dt=0.2)
    without = global_pde(f, h, u, v, Dx, Dy, iterations=1, dt=0.2, forcing=False)
    D = 1 / (1 + 2 * Dx * 0.2 + 2 * Dy * 0.2)
    torch.testing.assert_close(with_f - without, D * 2 * 0.2 * f, rtol=1e-5, atol=1e-6)


def test_one_step_by_hand_on_a_single_pixel_grid():
    # On a 1x1 grid every shift is the identity and ux = vy = 0, so one step reduces to
    # H1 = D ((1 - 2Bx - 2By) f + 4 (Bx + By) h) + 2 dt D f.
    f, h = torch.tensor([[[[2.0]]]]), torch.tensor([[[[3.0]]]])
    Dx, Dy, dt = 0.5, 0.25, 0.2
    Bx, By = Dx * dt, Dy * dt
    D = 1 / (1 + 2 * Bx + 2 * By)
    expected = D * ((1 - 2 * Bx - 2 * By) * 2.0 + 4 * (Bx + By) * 3.0) + 2 * dt * D * 2.0
    got = global_pde(f, h, torch.zeros_like(f), torch.zeros_like(f), Dx, Dy, iterations=1, dt=dt)
    assert got.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("impl", [global_pde, global_pde_reference], ids=["global_pde", "reference"])
def test_gradients_flow_to_every_input(impl):
    tensors = _fields((2, 2, 5, 6), seed=3, requires_grad=True)
    out = impl(*tensors, iterations=3, dt=0.2)
    (out * torch.randn_like(out)).sum().backward()
    for name, t in zip("f h u v Dx Dy".split(), tensors):
        assert t.grad is not None, name
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0, name


def test_gradients_match_literal():
    a = _fields((1, 3, 6, 6), seed=4, requires_grad=True)
    b = [t.detach().clone().requires_grad_(True) for t in a]
    w = torch.randn(1, 3, 6, 6)
    (global_pde(*a, iterations=4, dt=0.15) * w).sum().backward()
    (literal(*b, iterations=4, dt=0.15) * w).sum().backward()
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-4, atol=1e-5)


def test_bad_arguments_raise():
    f = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="iterations"):
        global_pde(f, f, 0.0, 0.0, 1.0, 1.0, iterations=0, dt=0.1)
    with pytest.raises(ValueError, match="same shape"):
        global_pde(f, torch.zeros(1, 1, 4, 5), 0.0, 0.0, 1.0, 1.0, iterations=1, dt=0.1)
