"""Non-finite values (NaN, Inf): the error both modes raise, and how it describes an array.

`debug.check_numerics` makes eager mode check every op's output (through the tensor's
`watch_outputs` hook) and graph mode every node's (a check after each line of the generated
code, `compile_graph(..., check_numerics=True)`); the first non-finite one stops the step with
a `NonFiniteError` that names it. Both are off by default and cost nothing then.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainctl.backend import to_host
from trainctl.errors import TrainctlError


class NonFiniteError(TrainctlError):
    """A tensor with NaN or Inf values where the step needs finite ones; the run fails."""

    exit_code = 1


def all_finite(xp: Any, array: Any) -> bool:
    """Whether every value of `array` is finite (integer and boolean arrays always are)."""
    floating = np.issubdtype(np.dtype(array.dtype), np.floating)
    return not floating or bool(xp.isfinite(array).all())


def describe_nonfinite(array: Any) -> str:
    """What is wrong with `array`, for a message: '3 NaN and 1 Inf among 640 values'."""
    host = np.asarray(to_host(array))
    counts = [(int(np.isnan(host).sum()), "NaN"), (int(np.isinf(host).sum()), "Inf")]
    found = " and ".join(f"{count} {kind}" for count, kind in counts if count)
    return f"{found or 'no NaN or Inf'} among {host.size} value{'' if host.size == 1 else 's'}"


def array_text(array: Any) -> str:
    """dtype and shape the way the graph IR prints them: float32[64, 10]."""
    return f"{np.dtype(array.dtype)}{list(array.shape)}"


def gradient_origin(op_name: str, forward_origin: str) -> str:
    """Where a backward value comes from, the same words in both modes."""
    where = f" of {forward_origin}" if forward_origin else ""
    return f"the backward pass (the gradient through {op_name}{where})"


# Where the values of a step that no layer computes come from, the same words in both modes.
LOSS_ORIGIN = "the loss"
UPDATE_ORIGIN = "the gradient clipping and optimizer update"
