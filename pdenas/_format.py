"""Numbers as a person reads them, the same in the terminal, the report and the export: accuracy in percent,
MACs as "15.2M", ratios as "4.58x", durations and latencies with their units, and how a latency was measured."""

from __future__ import annotations

import math

__all__ = ["percent", "points", "count", "ratio", "seconds", "milliseconds", "runtime_setup"]

_DASH = "–"


def percent(fraction: float | None) -> str:
    """0.93124 -> "93.12%"."""
    return _DASH if fraction is None or math.isnan(fraction) else f"{100.0 * fraction:.2f}%"


def points(delta: float | None) -> str:
    """An accuracy difference (fractions) in percentage points: -0.0084 -> "-0.84 pp"."""
    if delta is None or math.isnan(delta):
        return _DASH
    return f"{100.0 * delta:+.2f} pp".replace("-", "−")


def count(value: float | None, *, digits: int = 3) -> str:
    """15_234_000 -> "15.2M" (``digits=4``: "15.23M"); significant digits with a K/M/G/T suffix."""
    if value is None or math.isnan(value):
        return _DASH
    magnitude = abs(value)
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if magnitude >= scale * (1 - 0.5 * 10 ** -digits):
            return f"{_significant(value / scale, digits)}{suffix}"
    return _significant(value, digits)


def _significant(value: float, digits: int) -> str:
    text = f"{value:.{digits}g}"
    if "e" in text:  # 999.5 rounds to 1e+03 under .3g: one more digit instead
        text = f"{value:.0f}"
    return text


def ratio(value: float | None) -> str:
    """4.583 -> "4.58x"."""
    return _DASH if value is None or math.isnan(value) else f"{value:.2f}x"


def seconds(value: float | None) -> str:
    """Durations: "42.0 s", "12.5 min", "3.2 h"."""
    if value is None or math.isnan(value):
        return _DASH
    if value < 60:
        return f"{value:.1f} s"
    if value < 3600:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def milliseconds(value: float | None) -> str:
    """Latency: 1.234 -> "1.23 ms"."""
    return _DASH if value is None or math.isnan(value) else f"{value:.3g} ms"


def runtime_setup(runtime: str | None, batch_size: int | None, threads: int | None) -> str:
    """How a latency was measured: "onnxruntime, batch 1, 2 threads" (the parts known)."""
    parts = [runtime or "runtime not recorded"]
    if batch_size is not None:
        parts.append(f"batch {batch_size}")
    if threads is not None:
        parts.append(f"{threads} thread" + ("" if threads == 1 else "s"))
    return ", ".join(parts)
