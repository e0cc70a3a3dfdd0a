"""Incremental decoding: a causal sequence model fed a few new positions at a time, each
layer that looks back keeping what it needs from the earlier calls (eager mode, inference).

Inside `decoding(state)` the same layer code runs as in a full forward: learned positions
start at `state.position`, causal self-attention prepends the keys and values it cached for
the earlier positions (a KV cache) and the LSTM starts from its last state. The caller feeds
the new positions and then advances the position with `state.advance`. Outside it (training,
graph mode's traces) nothing changes. Only layers whose output at a position depends on that
position alone, or that take part here, may be decoded this way: see
`trainctl.predict.incremental`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

_ACTIVE: contextvars.ContextVar[DecodeState | None] = contextvars.ContextVar(
    "trainctl_decoding", default=None
)


@dataclass
class DecodeState:
    """What incremental decoding keeps between calls: the position of the first new one, and
    per layer (by identity) what it remembers of the earlier positions."""

    position: int = 0
    memory: dict[int, Any] = field(default_factory=dict)

    def advance(self, positions: int) -> None:
        self.position += positions


@contextlib.contextmanager
def decoding(state: DecodeState) -> Iterator[DecodeState]:
    """Run forwards within `state` (see the module docstring)."""
    token = _ACTIVE.set(state)
    try:
        yield state
    finally:
        _ACTIVE.reset(token)


def active_decoding() -> DecodeState | None:
    """The state of the enclosing `decoding` block, or None in an ordinary forward."""
    return _ACTIVE.get()
