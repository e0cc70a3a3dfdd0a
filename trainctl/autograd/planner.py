"""The memory planner: every value of a step gets a home in a fixed set of arrays.

Liveness decides when an array is free again; a node writes over an input that dies at it
where its op allows (`Op.overwritable`), the new value of a state slot goes straight into the
slot's array, the parts of a flat concatenation are computed in their slices, and views cost
nothing. Layouts are worked out on data-free NumPy stand-ins (`_layout`), so a reshape is a
view in the plan exactly when NumPy would make it one. Everything it knows of an op it reads
from the op: its kind, what it may overwrite, its scratch, the storage it writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainctl.autograd import ops
from trainctl.autograd.graph import Graph, Node, Value
from trainctl.autograd.ops import Spec

INF = 1 << 62


@dataclass(eq=False)
class Storage:
    """One preallocated array: a pool buffer (1-d), a state array, a batch input, a constant,
    or a private scratch array (zeroed once, never shared)."""

    index: int
    kind: str  # "pool" | "state" | "input" | "const" | "private"
    shape: tuple[int, ...]
    dtype: np.dtype
    busy_until: int = -1
    writable: bool = True

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


@dataclass
class Plan:
    """Where every array value of a graph lives during a step.

    `home[v]` is (storage, None) for a value that fills its storage (reshaped to v's shape),
    (storage, offset) for one that is a slice of it (a part of a concatenation written in
    place), (storage, node) for a value inside the storage its op writes (col2im's padded
    image), or (None, node) for a view built from its input. `concat_copies[node]` lists the
    parts a concatenation still has to copy, `scratch[node]` the temporary storages a node
    uses, `alias[node]` the input position its output overwrote, `copies` the state slots
    whose new value must be copied at the end.
    """

    storages: list[Storage] = field(default_factory=list)
    home: dict[Value, tuple[Storage | None, Any]] = field(default_factory=dict)
    scratch: dict[Node, list[tuple[Storage, tuple[int, ...]]]] = field(default_factory=dict)
    copies: list[tuple[Any, Any]] = field(default_factory=list)
    alias: dict[Node, int | None] = field(default_factory=dict)
    concat_copies: dict[Node, tuple[int, ...]] = field(default_factory=dict)


def _layout(dtype: np.dtype, shape: tuple, strides: tuple) -> np.ndarray:
    """A layout without data: an array over one element of memory that claims `shape`, so
    NumPy itself says what a reshape/transpose/index of a value looks like (never read)."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape, strides, writeable=False)


def _pointer(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def plan_buffers(graph: Graph, xp: Any = np) -> Plan:
    """Assign every array value of `graph` a home in a fixed set of storages (see Planner)."""
    return Planner(graph, xp).run()


class Planner:
    """Walks the nodes in order and gives each output, by preference: the state array of the
    slot it is the new value of, once nothing reads the old value; the storage of an input
    that dies at this node (in place, where the op allows it); a free pool buffer of the same
    dtype and size; or a new one. `plan.alias[node]` records the input position an output
    overwrote, which decides the scratch the node needs. Views get no storage: they alias
    their input, whose storage stays busy meanwhile.
    """

    def __init__(self, graph: Graph, xp: Any) -> None:
        self.graph, self.xp = graph, xp
        self.plan = Plan()
        self.bases: dict[Storage, np.ndarray] = {}  # each storage's flat layout
        self.layouts: dict[Value, np.ndarray] = {}
        self.storage_of: dict[Value, Storage] = {}  # views included
        self.last_use: dict[Any, int] = {}
        for i, node in enumerate(graph.nodes):
            for x in node.inputs:
                if isinstance(x, Value):
                    self.last_use[x] = i
        self.output_values = {v for v in graph.outputs.values() if isinstance(v, Value)}
        for v in self.output_values:
            self.last_use[v] = INF
        self.slot_of_output = {id(v): slot.name for slot, v in graph.state_outputs()}
        self.state_storage: dict[str, Storage] = {}
        self.free_pool: dict[tuple, list[Storage]] = {}
        self.claims = _concat_claims(graph, self.output_values)
        self.concat_storage: dict[Node, Storage] = {}

    def run(self) -> Plan:
        self.place_fixed()
        for i, node in enumerate(self.graph.nodes):
            if not isinstance(node.out, Value):
                continue
            if node.op.kind == "view" and self.place_view(node):
                continue
            if node.out in self.claims:
                self.place_in_concatenation(i, node)
            elif node in self.concat_storage:
                self.place_concatenation(node)
            else:
                self.place_output(i, node)
        for slot, value in self.graph.state_outputs():
            storage = self.state_storage[slot.name]
            if value is not slot.value and self.plan.home[value][0] is not storage:
                self.plan.copies.append((slot, value))
        return self.plan

    # ------------------------------------------------------------ storages

    def new_storage(self, kind: str, shape: tuple, dtype: Any, **kwargs: Any) -> Storage:
        plan = self.plan
        storage = Storage(len(plan.storages), kind, tuple(shape), np.dtype(dtype), **kwargs)
        plan.storages.append(storage)
        return storage

    def base(self, storage: Storage) -> np.ndarray:
        if storage not in self.bases:
            itemsize = storage.dtype.itemsize
            self.bases[storage] = _layout(storage.dtype, (storage.size,), (itemsize,))
        return self.bases[storage]

    def home(self, value: Value, storage: Storage, where: Any, layout: np.ndarray) -> None:
        self.plan.home[value] = (storage, where)
        self.storage_of[value] = storage
        self.layouts[value] = layout
        storage.busy_until = max(storage.busy_until, self.last_use.get(value, -1))

    def place(self, value: Value, storage: Storage) -> None:
        self.home(value, storage, None, self.base(storage).reshape(value.shape))

    def take_pool(self, shape: tuple, dtype: Any, i: int, avoid: Storage | None) -> Storage:
        size = math.prod(shape)
        for storage in self.free_pool.get((np.dtype(dtype).str, size), []):
            if storage.busy_until < i and storage is not avoid:
                return storage
        storage = self.new_storage("pool", (size,), dtype)
        self.free_pool.setdefault((storage.dtype.str, size), []).append(storage)
        return storage

    def take_scratch(self, node: Node, alias: int | None, i: int, target: Storage) -> None:
        self.plan.alias[node] = alias
        scratch = []
        for need in node.op.scratch_of(node, self.xp, alias):
            if getattr(need, "private", False):
                storage = self.new_storage("private", need.shape, need.dtype)
            else:
                storage = self.take_pool(tuple(need.shape), need.dtype, i, target)
            storage.busy_until = max(storage.busy_until, i)  # busy during this node only
            scratch.append((storage, tuple(need.shape)))
        if scratch:
            self.plan.scratch[node] = scratch

    # ------------------------------------------------------------ values

    def place_fixed(self) -> None:
        graph = self.graph
        for v in graph.inputs:  # read-only: a replay sees the batch it was given
            self.place(v, self.new_storage("input", v.shape, v.dtype, writable=False))
        for slot in graph.state:
            out = graph.outputs.get(slot.name)
            writable = out is not None and out is not slot.value
            storage = self.new_storage(
                "state", slot.value.shape, slot.value.dtype, writable=writable
            )
            self.state_storage[slot.name] = storage
            self.place(slot.value, storage)
        for c in used_constants(graph):
            storage = self.new_storage("const", c.shape, c.dtype, writable=False)
            self.home(c, storage, None, _layout(c.dtype, c.shape, c.array.strides))
            storage.busy_until = INF

    def place_view(self, node: Node) -> bool:
        """A view of its input's storage, when the op can make one of that layout."""
        source = node.inputs[0]
        view = node.op.view_of(self.layouts[source], **node.attrs)
        if view is None:
            return False
        self.home(node.out, self.storage_of[source], node, view)
        self.plan.home[node.out] = (None, node)
        return True

    def place_in_concatenation(self, i: int, node: Node) -> None:
        """A value computed straight into its slice of a flat concatenation."""
        concat, offset = self.claims[node.out]
        storage = self.concat_storage.get(concat)
        if storage is None:
            storage = self.take_pool((concat.out.size,), concat.out.dtype, i, None)
            storage.busy_until = max(storage.busy_until, self.graph.nodes.index(concat))
            self.concat_storage[concat] = storage
        self.take_scratch(node, None, i, storage)
        layout = self.base(storage)[offset : offset + node.out.size].reshape(node.out.shape)
        self.home(node.out, storage, offset, layout)

    def place_concatenation(self, node: Node) -> None:
        """The concatenation itself: it copies only the parts not computed in place."""
        storage = self.concat_storage[node]
        base = _pointer(self.base(storage))
        copies, offset = [], 0
        for position, x in enumerate(node.inputs):
            layout = self.layouts[x]
            in_place = (
                self.storage_of.get(x) is storage
                and layout.flags.c_contiguous
                and _pointer(layout) == base + offset * storage.dtype.itemsize
            )
            if not in_place:
                copies.append(position)
            offset += x.size
        self.plan.concat_copies[node] = tuple(copies)
        self.place(node.out, storage)

    def place_output(self, i: int, node: Node) -> None:
        out = node.out
        spec = storage_spec(node)
        fits = spec.shape == out.shape
        target, alias = self.reusable(i, node) if fits else (None, None)
        if target is None:
            target = self.take_pool(tuple(spec.shape), spec.dtype, i, None)
        self.take_scratch(node, alias, i, target)
        if fits:
            self.place(out, target)
        else:  # the value lies inside the storage its op writes
            flat = self.base(target).reshape(spec.shape)
            self.home(out, target, node, node.op.value_of(flat, **node.attrs))

    def reusable(self, i: int, node: Node) -> tuple[Storage | None, int | None]:
        """The state array `node` computes the new value of, or a dying input's storage it may
        overwrite (never a state array whose old value is an output), and the input position
        overwritten."""
        out = node.out
        allowed = node.op.overwritable(node, self.xp)
        own_slot = self.slot_of_output.get(id(out))
        candidates = [] if own_slot is None else [self.state_storage[own_slot]]
        for position in sorted(allowed):
            storage = self.storage_of.get(node.inputs[position])
            if storage is not None and not (storage.kind == "state" and out in self.output_values):
                candidates.append(storage)
        for storage in filter(lambda storage: storage.writable, candidates):
            free, position = self.free_for(storage, node, i, allowed)
            if free:
                return storage, position
        return None, None

    def free_for(
        self, storage: Storage, node: Node, i: int, allowed: set[int]
    ) -> tuple[bool, int | None]:
        """Whether node i may write its output over `storage`, and which input it then
        overwrites: free when nothing reads the storage after node i, and node i itself reads
        it through at most one input position the op allows, laid out exactly as the output
        would be in the whole storage.
        """
        if storage.busy_until != i:
            return storage.busy_until < i, None
        readers = [
            position
            for position, x in enumerate(node.inputs)
            if isinstance(x, Value) and self.storage_of.get(x) is storage
        ]
        if len(readers) != 1 or readers[0] not in allowed:
            return False, None
        layout, out = self.layouts[node.inputs[readers[0]]], node.out
        exact = (
            tuple(layout.shape) == out.shape
            and layout.dtype == out.dtype
            and layout.flags.c_contiguous
            and storage.size == out.size
            and storage.dtype == out.dtype
            and _pointer(layout) == _pointer(self.base(storage))
        )
        return exact, readers[0]


def storage_spec(node: Node) -> Spec:
    """The array a node writes: its output, or the storage its op declares (a padded image)."""
    if node.op.storage is not None:
        spec = node.op.storage(*node.inputs, **node.attrs)
        if spec is not None:
            return spec
    return Spec(node.out.shape, node.out.dtype)


def _concat_claims(graph: Graph, output_values: set) -> dict[Value, tuple[Node, int]]:
    """Computed values that can be written straight into their slice of a flat (axis 0)
    concatenation: value -> (concatenate node, offset). Reshapes are looked through."""
    producers = graph.producers()
    claims: dict[Value, tuple[Node, int]] = {}
    for node in graph.nodes:
        if node.op is not ops.Concatenate or len(node.out.shape) != 1:
            continue
        offset = 0
        for x in node.inputs:
            root = x
            while root in producers and producers[root].op is ops.Reshape:
                root = producers[root].inputs[0]
            maker = producers.get(root)
            if (
                maker is not None
                and maker.op.kind != "view"
                and root.dtype == node.out.dtype
                and root not in claims
                and root not in output_values
                and tuple(storage_spec(maker).shape) == root.shape
            ):
                claims[root] = (node, offset)
            offset += x.size
    return claims


def used_constants(graph: Graph) -> list[Value]:
    """The constants some node or output still reads, in creation order."""
    used = {id(x) for node in graph.nodes for x in node.inputs}
    used |= {id(v) for v in graph.outputs.values()}
    return [c for c in graph.constants if id(c) in used]
