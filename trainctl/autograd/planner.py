"""The memory planner: every value of a step gets a home in a fixed set of arrays.

Liveness decides when an array is free again; a node writes over an input that dies at it
where its kernel allows, the new value of a state slot goes straight into the slot's array,
the parts of a flat concatenation are computed in their slices, and views cost nothing.
Layouts are worked out on data-free NumPy stand-ins (`_Probe`), so a reshape is a view in the
plan exactly when NumPy would make it one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainctl.autograd import ops
from trainctl.autograd.graph import Graph, Node, Value
from trainctl.autograd.kernels import VIEW_OPS
from trainctl.autograd.ops import Spec

INF = 1 << 62


@dataclass(eq=False)
class Storage:
    """One preallocated array: a pool buffer (1-d), a state array, a batch input, a constant."""

    index: int
    kind: str  # "pool" | "state" | "input" | "const"
    shape: tuple[int, ...]
    dtype: np.dtype
    busy_until: int = -1
    writable: bool = True
    slot: str | None = None  # state storages: the slot they hold

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
    place), (storage, node) for col2im's padded image, or (None, node) for a view built from
    its input. `concat_copies[node]` lists the parts a concatenation still has to copy,
    `scratch[node]` the temporary storages a node's kernel uses, `copies` the state slots
    whose new value must be copied at the end.
    """

    storages: list[Storage] = field(default_factory=list)
    home: dict[Value, tuple[Storage | None, Node | None]] = field(default_factory=dict)
    storage_of: dict[Value, Storage] = field(default_factory=dict)
    scratch: dict[Node, list[tuple[Storage, tuple[int, ...], np.dtype]]] = field(
        default_factory=dict
    )
    copies: list[tuple[str, Any]] = field(default_factory=list)
    views: set = field(default_factory=set)
    alias: dict[Node, int | None] = field(default_factory=dict)
    concat_copies: dict[Node, list[int]] = field(default_factory=dict)


class _Probe:
    """Layouts without data: arrays over one element of memory that claim a whole storage, so
    NumPy itself says what a reshape/transpose/index of a value looks like (never read)."""

    def __init__(self) -> None:
        self.bases: dict[Storage, Any] = {}

    def base(self, storage: Storage) -> Any:
        if storage not in self.bases:
            one = np.zeros(1, storage.dtype)
            flat = np.lib.stride_tricks.as_strided(
                one, (storage.size,), (storage.dtype.itemsize,), writeable=False
            )
            self.bases[storage] = flat
        return self.bases[storage]

    @staticmethod
    def pointer(array: Any) -> int:
        return array.__array_interface__["data"][0]


def plan_buffers(
    graph: Graph,
    scratch_of: Callable[[Node, int | None], list[Spec]],
    aliasable: Callable[[Node], set[int]],
    storage_spec: Callable[[Node], Spec] | None = None,
) -> Plan:
    """Assign every array value a home in a fixed set of storages (liveness + reuse).

    A node writes its output into, by preference: the state array of the slot it is the new
    value of, once nothing reads the old value; the storage of an input that dies at this node
    (in place, where the kernel allows it: `aliasable(node)` gives the input positions); a free
    pool buffer of the same dtype and size; or a new one. `alias[node]` records the input
    position an output overwrote, and `scratch_of(node, alias)` the temporaries it needs.
    Views (reshape, transpose, broadcast, basic indexing) get no storage: they alias their
    input, whose storage stays busy meanwhile.
    """
    plan = Plan()
    probe = _Probe()
    probes: dict[Value, Any] = {}
    nodes = graph.nodes
    last_use: dict[Any, int] = {}
    for i, node in enumerate(nodes):
        for x in node.inputs:
            if isinstance(x, Value):
                last_use[x] = i
    output_values = {v for v in graph.outputs.values() if isinstance(v, Value)}
    for v in output_values:
        last_use[v] = INF
    slot_of_output = {id(v): slot.name for slot, v in graph.state_outputs()}

    def new_storage(kind: str, shape: tuple, dtype: np.dtype, **kwargs: Any) -> Storage:
        storage = Storage(len(plan.storages), kind, tuple(shape), np.dtype(dtype), **kwargs)
        plan.storages.append(storage)
        return storage

    def place(value: Value, storage: Storage) -> None:
        plan.home[value] = (storage, None)
        plan.storage_of[value] = storage
        probes[value] = probe.base(storage).reshape(value.shape)
        storage.busy_until = max(storage.busy_until, last_use.get(value, -1))

    for v in graph.inputs:  # read-only: a replay sees the batch it was given
        place(v, new_storage("input", v.shape, v.dtype, writable=False))
    state_storage: dict[str, Storage] = {}
    for slot in graph.state:
        out = graph.outputs.get(slot.name)
        writable = out is not None and out is not slot.value
        storage = new_storage("state", slot.value.shape, slot.value.dtype, writable=writable)
        storage.slot = slot.name
        state_storage[slot.name] = storage
        place(slot.value, storage)
    for c in used_constants(graph):
        storage = new_storage("const", c.shape, c.dtype, writable=False)
        plan.home[c] = (storage, None)
        plan.storage_of[c] = storage
        probes[c] = _layout_like(c.array)
        storage.busy_until = INF

    free_pool: dict[tuple, list[Storage]] = {}
    index_of = {node: i for i, node in enumerate(nodes)}
    claims = _concat_claims(graph, output_values, storage_spec)
    concat_storage: dict[Node, Storage] = {}

    def take_pool(shape: tuple, dtype: np.dtype, i: int, avoid: Storage | None) -> Storage:
        size = math.prod(shape)
        for storage in free_pool.get((np.dtype(dtype).str, size), []):
            if storage.busy_until < i and storage is not avoid:
                return storage
        storage = new_storage("pool", (size,), dtype)
        free_pool.setdefault((storage.dtype.str, size), []).append(storage)
        return storage

    def take_scratch(node: Node, alias: int | None, i: int, target: Storage) -> None:
        scratch = []
        for need in scratch_of(node, alias):
            storage = take_pool(tuple(need.shape), need.dtype, i, target)
            storage.busy_until = i  # busy during this node only
            scratch.append((storage, tuple(need.shape), np.dtype(need.dtype)))
        if scratch:
            plan.scratch[node] = scratch

    for i, node in enumerate(nodes):
        out = node.out
        if not isinstance(out, Value):
            continue
        if node.op.name in VIEW_OPS:
            view = _view_probe(node, probes[node.inputs[0]])
            if view is not None:
                source = plan.storage_of[node.inputs[0]]
                plan.home[out] = (None, node)
                plan.storage_of[out] = source
                plan.views.add(node)
                probes[out] = view
                source.busy_until = max(source.busy_until, last_use.get(out, -1))
                continue
        claim = claims.get(out)
        if claim is not None:  # written straight into its slice of a concatenation
            concat, offset = claim
            storage = concat_storage.get(concat)
            if storage is None:
                storage = take_pool((concat.out.size,), concat.out.dtype, i, None)
                storage.busy_until = max(storage.busy_until, index_of[concat])
                concat_storage[concat] = storage
            plan.alias[node] = None
            take_scratch(node, None, i, storage)
            plan.home[out] = (storage, offset)
            plan.storage_of[out] = storage
            probes[out] = probe.base(storage)[offset : offset + out.size].reshape(out.shape)
            storage.busy_until = max(storage.busy_until, last_use.get(out, -1))
            continue
        if node in concat_storage:
            storage = concat_storage[node]
            base = _Probe.pointer(probe.base(storage))
            plan.concat_copies[node] = []
            offset = 0
            for position, x in enumerate(node.inputs):
                layout = probes[x]
                in_place = (
                    plan.storage_of.get(x) is storage
                    and layout.flags.c_contiguous
                    and _Probe.pointer(layout) == base + offset * storage.dtype.itemsize
                )
                if not in_place:
                    plan.concat_copies[node].append(position)
                offset += x.size
            place(out, storage)
            continue
        spec = storage_spec(node) if storage_spec else Spec(out.shape, out.dtype)
        fits_storage = spec.shape == out.shape
        target, alias = None, None
        own_slot = slot_of_output.get(id(out))
        if own_slot is not None and fits_storage and state_storage[own_slot].writable:
            storage = state_storage[own_slot]
            free, position = _free_for(storage, node, i, plan, probes, aliasable(node), probe)
            if free:
                target, alias = storage, position
        if target is None and fits_storage:
            for position in sorted(aliasable(node)):
                x = node.inputs[position]
                if not isinstance(x, Value) or x not in plan.storage_of:
                    continue
                storage = plan.storage_of[x]
                if not storage.writable or (storage.kind == "state" and out in output_values):
                    continue
                free, at = _free_for(storage, node, i, plan, probes, {position}, probe)
                if free and at == position:
                    target, alias = storage, position
                    break
        if target is None:
            target = take_pool(tuple(spec.shape), spec.dtype, i, None)
        plan.alias[node] = alias
        take_scratch(node, alias, i, target)
        if fits_storage:
            place(out, target)
        else:
            plan.home[out] = (target, node)
            plan.storage_of[out] = target
            probes[out] = _storage_view_probe(node, probe.base(target))
            target.busy_until = max(target.busy_until, last_use.get(out, -1))
    for slot, value in graph.state_outputs():
        if value is slot.value:
            continue
        storage = state_storage[slot.name]
        if plan.storage_of.get(value) is not storage or plan.home[value][0] is not storage:
            plan.copies.append((slot.name, value))
    return plan


def _concat_claims(
    graph: Graph, output_values: set, storage_spec: Callable[[Node], Spec] | None
) -> dict[Value, tuple[Node, int]]:
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
                and maker.op.name not in VIEW_OPS
                and root.dtype == node.out.dtype
                and root not in claims
                and root not in output_values
                and (storage_spec is None or tuple(storage_spec(maker).shape) == root.shape)
            ):
                claims[root] = (node, offset)
            offset += x.size
    return claims


def _view_probe(node: Node, source: Any) -> Any:
    """The layout `node` (a view op) gives its input's layout, or None when it must copy."""
    name, attrs = node.op.name, node.attrs
    if name == "reshape":
        try:
            return np.reshape(source, attrs["shape"], copy=False)
        except ValueError:
            return None
    if name == "transpose":
        return np.transpose(source, attrs["axes"])
    if name == "broadcast_to":
        return np.broadcast_to(source, attrs["shape"])
    return source[attrs["index"]]


def _storage_view_probe(node: Node, flat: Any) -> Any:
    """col2im keeps eager's layout: a padded image whose interior is the value."""
    n, h, w, c = node.attrs["x_shape"]
    pad = node.attrs["padding"]
    padded = flat.reshape(n, h + 2 * pad, w + 2 * pad, c)
    return padded[:, pad : pad + h, pad : pad + w, :]


def _free_for(
    storage: Storage,
    node: Node,
    i: int,
    plan: Plan,
    probes: dict,
    allowed: set[int],
    probe: _Probe,
) -> tuple[bool, int | None]:
    """Whether node i may write its output over `storage`, and which input it then overwrites.

    Free when nothing reads the storage after node i, and node i itself reads it at most
    through one input position that the kernel allows to share its output, laid out exactly
    as the output will be.
    """
    if storage.busy_until < i:
        return True, None
    if storage.busy_until > i:
        return False, None
    readers = [
        position
        for position, x in enumerate(node.inputs)
        if isinstance(x, Value) and plan.storage_of.get(x) is storage
    ]
    if len(readers) != 1 or readers[0] not in allowed:
        return False, None
    position = readers[0]
    return _exact(probes[node.inputs[position]], node.out, storage, probe), position


def _exact(layout: Any, out: Value, storage: Storage, probe: _Probe) -> bool:
    """`layout` covers exactly the memory `out` would get from the whole storage."""
    return (
        tuple(layout.shape) == out.shape
        and layout.dtype == out.dtype
        and layout.flags.c_contiguous
        and storage.size == out.size
        and storage.dtype == out.dtype
        and _Probe.pointer(layout) == _Probe.pointer(probe.base(storage))
    )


def _layout_like(array: Any) -> Any:
    """A data-free NumPy stand-in with the shape and strides of a (NumPy or CuPy) array."""
    one = np.zeros(1, array.dtype)
    return np.lib.stride_tricks.as_strided(one, array.shape, array.strides, writeable=False)


def used_constants(graph: Graph) -> list[Value]:
    """The constants some node or output still reads, in creation order."""
    used = {id(x) for node in graph.nodes for x in node.inputs}
    used |= {id(v) for v in graph.outputs.values()}
    return [c for c in graph.constants if id(c) in used]
