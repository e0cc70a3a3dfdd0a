"""How numbers read on screen and in logs, the same wherever they are shown.

Metrics keep four significant digits, so a loss of 2.628e-06 never shows as 0.0000; a rate
keeps four as well but never turns into an exponent; a learning rate reads as it was written;
times read as durations (5.2s, 2m05s) or, counting down, as a clock (1:50).
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any


def metric_text(value: Any) -> str:
    """A metric with 4 significant digits, trailing zeros kept so a column lines up:
    0.9500, 0.1235, 2.628e-06, 1234; integers and non-numbers as they are, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, (bool, Integral)) or not isinstance(value, Real):
        return str(value)
    if not math.isfinite(value):
        return str(float(value))
    return f"{value:#.4g}".removesuffix(".")


def rate_text(value: float) -> str:
    """A throughput with 4 significant digits, more rather than an exponent: 57.30, 109.4,
    16378."""
    if not math.isfinite(value) or value == 0:
        return f"{value:.0f}"
    decimals = max(0, 3 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def lr_text(value: float) -> str:
    """A learning rate, shortest form: 0.01, 0.0475, 1e-05."""
    return f"{value:.4g}"


def duration(seconds: float | None) -> str:
    """How long something took: 5.2s, 2m05s, 3h01m."""
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def clock_text(seconds: float) -> str:
    """A time to go, as a clock: 0:07, 12:34, 1:02:03."""
    minutes, secs = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
