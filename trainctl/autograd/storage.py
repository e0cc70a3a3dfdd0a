"""The arrays behind a compiled step's state: parameters, buffers, optimizer state.

Graph mode gives every state slot one array that each compiled signature of the same model
and optimizer reads and updates in place. The `flatten` pass may lay several slots out in one
flat array, so that one ufunc call updates every parameter: that slot's source is a
`FlatState`, and the arrays of its members become views of the flat one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FlatMember:
    """A state slot merged into a flat one: its own name and source, where it sits."""

    name: str
    source: Any
    shape: tuple[int, ...]
    offset: int


@dataclass(frozen=True)
class FlatState:
    """The source of a flat state slot: the slots merged into it."""

    members: tuple[FlatMember, ...]

    def describe(self) -> str:
        """The layout as the IR text shows it: 'param:w[12, 8]@0, param:b[8]@96'."""
        return ", ".join(f"{m.name}{list(m.shape)}@{m.offset}" for m in self.members)


def state_sources(slots: list[Any]) -> Iterator[tuple[str, Any]]:
    """(name, source) of every state slot, the members of flat slots one by one."""
    for slot in slots:
        if isinstance(slot.source, FlatState):
            yield from ((member.name, member.source) for member in slot.source.members)
        else:
            yield slot.name, slot.source


class StateArrays:
    """One array per state slot name, allocated on first use and kept for every program."""

    def __init__(self, xp: Any) -> None:
        self.xp = xp
        self.arrays: dict[str, Any] = {}

    def allocate(self, slots: list[Any]) -> bool:
        """Arrays for the slots that have none yet. True when members of a new flat slot
        had arrays of their own (a signature compiled before, e.g. evaluation): their values
        moved into the flat array, and programs built on the old arrays must be rebuilt."""
        moved = False
        for slot in slots:
            if slot.name in self.arrays:
                continue
            array = self.arrays[slot.name] = self.xp.empty(slot.value.shape, slot.value.dtype)
            if isinstance(slot.source, FlatState):
                moved = self._share(array, slot.source) or moved
        return moved

    def _share(self, flat: Any, layout: FlatState) -> bool:
        moved = False
        for member in layout.members:
            size = math.prod(member.shape)
            view = flat[member.offset : member.offset + size].reshape(member.shape)
            if member.name in self.arrays:
                self.xp.copyto(view, self.arrays[member.name])
                moved = True
            self.arrays[member.name] = view
        return moved
