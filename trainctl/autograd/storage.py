"""The arrays behind a compiled step's state: parameters, buffers, optimizer state.

Graph mode gives every state slot one array that each compiled signature of the same model
and optimizer reads and updates in place. Before a replay, state that someone else rebound (a
checkpoint load, an eager step) is copied in; after it, the model and the optimizer point at
these arrays, exactly as `opt.step()` would have left them. The update runs over each dtype's
parameters and state laid out flat, and the `flatten` pass keeps such a layout as one flat
slot: its source is a `FlatState`, and the arrays of its members become views of the flat one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from trainctl.autograd.tensor import Tensor


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


@dataclass
class StateBinding:
    """Where the owned arrays of one program's state slots live outside the step."""

    params: list[tuple[Tensor, Any]] = field(default_factory=list)
    buffers: list[tuple[list[tuple[Any, str]], Any]] = field(default_factory=list)
    optimizer_state: dict[int, dict[str, Any]] = field(default_factory=dict)


class StateArrays:
    """One array per state slot name, allocated on first use and kept for every program.

    Slot names say where the state lives: `param:` (a parameter tensor), `buffer:` (a
    module's buffer, by its places) and `opt:` (an optimizer's entry, by index and name).
    """

    def __init__(self, device: Any) -> None:
        self.device, self.xp = device, device.xp
        self.arrays: dict[str, Any] = {}
        self._installed: dict[int, dict[str, Tensor]] = {}  # optimizer entries made here
        self._layout_of: dict[str, tuple] = {}  # a flat slot's member -> the slot's layout

    def conflicts(self, slots: list[Any]) -> bool:
        """Whether a flat slot among `slots` lays out a member that an earlier flat slot laid
        out otherwise: traces of one model that update different sets of parameters (a
        branch on the batch shape). Their members cannot be views of two flat arrays."""
        for slot in slots:
            if isinstance(slot.source, FlatState):
                layout = _layout(slot.source)
                for member in slot.source.members:
                    if self._layout_of.get(member.name, layout) != layout:
                        return True
        return False

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
            self._layout_of[member.name] = _layout(layout)
            size = math.prod(member.shape)
            view = flat[member.offset : member.offset + size].reshape(member.shape)
            if member.name in self.arrays:
                self.xp.copyto(view, self.arrays[member.name])
                moved = True
            self.arrays[member.name] = view
        return moved

    def bind(self, slots: list[Any]) -> StateBinding:
        """The owned arrays of `slots` (allocated), by where their state lives outside."""
        binding = StateBinding()
        for slot in slots:  # a flat slot by its members (FlatMembers have a name and source too)
            flat = isinstance(slot.source, FlatState)
            for member in slot.source.members if flat else (slot,):
                owned, kind = self.arrays[member.name], member.name.split(":", 1)[0]
                if kind == "param":
                    binding.params.append((member.source, owned))
                elif kind == "buffer":
                    binding.buffers.append((member.source, owned))
                else:
                    index, state_name = member.source
                    binding.optimizer_state.setdefault(index, {})[state_name] = owned
        return binding

    def copy_in(self, binding: StateBinding, optimizer: Any) -> None:
        """Bring in any state someone rebound since the last replay; parameters are rebound
        to the owned arrays at once, a missing optimizer entry starts from zeros."""
        xp = self.xp
        for param, owned in binding.params:
            if param.data is not owned:
                xp.copyto(owned, param.data)
                param.data = owned
        for places, owned in binding.buffers:
            module, key = places[0]
            current = module.__dict__[key].data
            if current is not owned:
                xp.copyto(owned, current)
        for index, slots in binding.optimizer_state.items():
            entry = optimizer.state.get(index)
            if entry is not None and entry is self._installed.get(index):
                continue  # the entry this step left, still holding its arrays
            for name, owned in slots.items():
                if entry is None:
                    owned.fill(0)
                elif entry[name].data is not owned:
                    xp.copyto(owned, entry[name].data)

    def store(self, binding: StateBinding, optimizer: Any, updated: list[int] | None) -> None:
        """Point the model's buffers and the optimizer's entries of the `updated` parameters
        at the owned arrays, as `opt.step()` would have left them."""
        for places, owned in binding.buffers:
            for module, key in places:
                if module.__dict__[key].data is not owned:
                    setattr(module, key, Tensor._wrap(owned, self.device))
        for index in updated or ():
            entry = optimizer.state.get(index)
            if entry is None or entry is not self._installed.get(index):
                slots = binding.optimizer_state.get(index, {})
                entry = {name: Tensor._wrap(owned, self.device) for name, owned in slots.items()}
                optimizer.state[index] = self._installed[index] = entry


def _layout(flat: FlatState) -> tuple:
    """A flat slot's layout as comparable values: each member's name, shape and offset."""
    return tuple((m.name, m.shape, m.offset) for m in flat.members)
