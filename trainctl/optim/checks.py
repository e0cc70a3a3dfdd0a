"""Argument checks shared by the optimizers and schedules: one clear message per bad value."""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from trainctl.errors import OptimizerError


def real_in(
    owner: str,
    name: str,
    value: Any,
    low: float = 0.0,
    high: float = math.inf,
    *,
    low_closed: bool = True,
    high_closed: bool = False,
) -> float:
    """`value` as a Python float (never a NumPy scalar, which would promote float32 math)."""
    interval = f"{'[' if low_closed else '('}{low:g}, {high:g}{']' if high_closed else ')'}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptimizerError(f"{owner}: {name} must be a number in {interval}, got {value!r}")
    number = float(value)
    above = number >= low if low_closed else number > low
    below = number <= high if high_closed else number < high
    if not (above and below):  # also rejects NaN
        raise OptimizerError(f"{owner}: {name} must be in {interval}, got {value!r}")
    return number


def int_at_least(owner: str, name: str, value: Any, low: int) -> int:
    if type(value) is int and value >= low:  # the common case, without the ABC check
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise OptimizerError(f"{owner}: {name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise OptimizerError(f"{owner}: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_names(kind: str, name: str, registry: Mapping[str, Any]) -> Any:
    """The entry of `registry` called `name`, or an error listing the known names."""
    if name in registry:
        return registry[name]
    raise OptimizerError(
        f"unknown {kind} {name!r}{did_you_mean(name, registry)}; "
        f"expected one of {', '.join(sorted(registry))}"
    )


def check_arguments(
    owner: str, given: Iterable[str], accepted: Iterable[str], required: Iterable[str] = ()
) -> None:
    """Reject keyword arguments `owner` does not take, and name the required ones left out."""
    accepted, given = list(accepted), list(given)
    for key in given:
        if key not in accepted:
            raise OptimizerError(
                f"{owner} got an unknown argument {key!r}{did_you_mean(key, accepted)}; "
                f"it takes: {', '.join(accepted)}"
            )
    missing = [key for key in required if key not in given]
    if missing:
        raise OptimizerError(f"{owner} needs the argument(s): {', '.join(missing)}")
