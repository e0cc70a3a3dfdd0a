"""Optimization passes over the IR.

Every pass is a function Graph -> Graph that changes only what its name says, and keeps the
numbers the graph computes bit for bit (graph mode must agree with eager mode). `optimize`
runs them in order and records node counts; any pass can be switched off for debugging.
The rewrites that replace primitives (simplify, the lowerings) are in `lowering.py`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainctl.autograd import ops
from trainctl.autograd.graph import Graph, HostScalar, Node, RngKey, StateSlot, Value
from trainctl.autograd.kernels import FUSED, LOOP, SELECT, Kernel, body_of
from trainctl.autograd.loops import loop_supports
from trainctl.autograd.lowering import (
    Rewrite,
    is_const,
    lower_dropout,
    lower_select,
    lower_softmax,
    simplify,
)
from trainctl.autograd.ops import Spec
from trainctl.autograd.storage import FlatMember, FlatState
from trainctl.backend import to_host
from trainctl.errors import TrainctlError

Pass = Callable[[Graph], Graph]


class PassError(TrainctlError):
    """A pass asked for (to be switched off) that does not exist."""


# ---------------------------------------------------------------- the passes


def dead_code(graph: Graph) -> Graph:
    """Drop nodes whose outputs no output of the graph depends on."""
    live = {v for v in graph.outputs.values() if isinstance(v, (Value, HostScalar))}
    kept = []
    for node in reversed(graph.nodes):
        if node.out in live:
            kept.append(node)
            live.update(x for x in node.inputs if isinstance(x, (Value, HostScalar)))
    return graph.with_nodes(kept[::-1])


def _key(x: Any) -> Any:
    if isinstance(x, (Value, HostScalar)):
        return ("v", x.id)
    return ("c", type(x).__name__, repr(x))


def common_subexpressions(graph: Graph) -> Graph:
    """Compute each (op, inputs, attributes) once; small equal constants are merged too."""
    rw, seen_constants, seen = Rewrite(graph), {}, {}
    for c in graph.constants:
        if c.array is not None and c.size <= 64:
            key = (c.dtype.str, c.shape, to_host(c.array).tobytes())
            first = seen_constants.setdefault(key, c)
            if first is not c:
                rw.mapping[c] = first
    for node in graph.nodes:
        inputs = rw.resolved(node).inputs
        key = (node.op.name, tuple(_key(x) for x in inputs), repr(sorted(node.attrs.items())))
        if key in seen:
            rw.mapping[node.out] = seen[key]
        else:
            seen[key] = node.out
            rw.nodes.append(node)
    return rw.result()


def fold_constants(graph: Graph) -> Graph:
    """Run, once at compile time, every primitive whose inputs are all constants.

    The op's own forward runs on the device's array module, so the folded array is exactly
    what eager mode computes at every step.
    """
    xp, rw, constants = graph.device.xp, Rewrite(graph), list(graph.constants)
    for node in graph.nodes:
        inputs = rw.resolved(node).inputs
        foldable = (
            not issubclass(node.op, Kernel)
            and isinstance(node.out, Value)
            and any(is_const(x) for x in inputs)
            and all(is_const(x) or isinstance(x, (bool, int, float)) for x in inputs)
            and not any(isinstance(x, HostScalar) for x in inputs)
            and not any(isinstance(a, RngKey) for a in node.attrs.values())
        )
        if not foldable:
            rw.nodes.append(node)
            continue
        arrays = [x.array if isinstance(x, Value) else x for x in inputs]
        result = xp.asarray(node.op.forward(xp, *arrays, **node.attrs))
        folded = Value(graph, Spec(result.shape, result.dtype), array=result)
        constants.append(folded)
        rw.mapping[node.out] = folded
    out = rw.result()
    out.constants = constants
    return out


def fuse_elementwise(graph: Graph) -> Graph:
    """Merge chains of elementwise nodes into one `fused` node each.

    A node joins the consumer it feeds when that consumer is elementwise with the same output
    shape and is its only reader (and the value is no output of the graph). On CuPy a fused node
    becomes one generated kernel; on NumPy a chain of in-place ufunc calls on one buffer.
    """
    uses = Counter(x for node in graph.nodes for x in node.inputs if _is_ref(x))
    uses.update(graph.outputs.values())
    member_of: dict[Node, Node] = {}  # member -> the node it is fused into (its root)
    producers = graph.producers()
    groups: dict[Node, list[Node]] = {}
    for node in reversed(graph.nodes):
        if not _fusible(node):
            continue
        root = member_of.get(node, node)
        groups.setdefault(root, []).append(node)
        for x in node.inputs:
            inner = producers.get(x) if isinstance(x, Value) else None
            if (
                inner is not None
                and _fusible(inner)
                and uses[x] == 1
                and inner.out.shape == root.out.shape
                and inner not in member_of
            ):
                member_of[inner] = root
    nodes: list[Node] = []
    for node in graph.nodes:
        if node in member_of:
            continue
        body = groups.get(node)
        if body is None or len(body) == 1:
            nodes.append(node)
            continue
        body = body[::-1]  # gathered from the last member back
        inner = {m.out for m in body}
        leaves = dict.fromkeys(x for m in body for x in m.inputs if _is_ref(x) and x not in inner)
        nodes.append(Node(FUSED, tuple(leaves), {"body": tuple(body)}, node.out))
    return graph.with_nodes(nodes)


def _fusible(node: Node) -> bool:
    return isinstance(node.out, Value) and node.op.kind == "elementwise"


def flatten_updates(graph: Graph) -> Graph:
    """Flat state kept flat: the optimizer's update is traced over the concatenation of each
    dtype's parameters (and of each kind of its state), as eager `opt.step()` runs it; this
    pass keeps those arrays flat between steps instead of concatenating them every step.

    A concatenation of distinct state slots (each flattened) whose new values are the slices
    of one value, in the same layout, becomes one flat state slot whose members are views of
    it: the forward and backward read the same memory the update writes, and one ufunc call
    (or loop) updates every parameter. The gradients' concatenation stays; the planner
    computes each gradient straight into its slice.
    """
    slots = {slot.value: slot for slot in graph.state}
    made = {node.out: node for node in graph.nodes}
    outputs = dict(graph.outputs)
    replaced: dict[Value, Value] = {}  # a concatenation -> its flat slot's value
    flat_slots: list[StateSlot] = []
    prologue: list[Node] = []
    claimed: set[StateSlot] = set()  # slots laid out flat already
    for node in graph.nodes:
        if node.op is not ops.Concatenate or len(node.out.shape) != 1:
            continue
        members = [_flattened_slot(x, made, slots) for x in node.inputs]
        if None in members or len(set(members)) != len(members) or claimed & set(members):
            continue
        new = _flat_update(members, outputs, made)
        if new is False:
            continue
        layout, offset = [], 0
        for slot in members:
            layout.append(FlatMember(slot.name, slot.source, slot.value.shape, offset))
            offset += slot.value.size
        name = f"flat:{members[0].name}..{members[-1].name}"
        value = Value(graph, Spec((offset,), node.out.dtype), name=name)
        flat_slots.append(StateSlot(name, value, FlatState(tuple(layout))))
        for slot, member in zip(members, layout, strict=True):
            prologue += _slice_views(graph, value, member.offset, slot.value)
            outputs.pop(slot.name, None)
        if new is not None:
            outputs[name] = new
        replaced[node.out] = value
        claimed.update(members)
    if not flat_slots:
        return graph
    nodes = [
        Node(node.op, tuple(replaced.get(x, x) for x in node.inputs), node.attrs, node.out)
        for node in graph.nodes
        if node.out not in replaced
    ]
    merged = {member.name for slot in flat_slots for member in slot.source.members}
    out = graph.with_nodes(prologue + nodes, outputs)
    out.state = [slot for slot in graph.state if slot.name not in merged] + flat_slots
    return dead_code(out)


def _flattened_slot(x: Value, made: dict[Value, Node], slots: dict[Value, StateSlot]) -> Any:
    """The state slot `x` is the value of (1-d) or a reshape to 1-d of; else None."""
    if x in slots:
        return slots[x] if len(x.shape) == 1 else None
    node = made.get(x)
    if node is not None and node.op is ops.Reshape and node.inputs[0] in slots:
        return slots[node.inputs[0]]
    return None


def _flat_update(members: list[StateSlot], outputs: dict, made: dict) -> Value | None | bool:
    """The value whose slices are the `members`' new values, each at its place in the
    concatenation and shaped as the member; None when no member is updated; False when
    neither (some are updated otherwise: the layout cannot stay)."""
    found, offset = set(), 0
    for slot in members:
        new = outputs.get(slot.name)
        node = made.get(new)
        if node is not None and node.op is ops.Reshape and new.shape == slot.value.shape:
            node = made.get(node.inputs[0])
        end = offset + slot.value.size
        if new is None:
            found.add(None)
        elif (
            node is not None
            and node.op is ops.Getitem
            and node.attrs["index"] == (slice(offset, end),)
        ):
            found.add(node.inputs[0])
        else:
            return False
        offset = end
    if len(found) != 1:
        return False
    (new,) = found
    return new if new is None or new.shape == (offset,) else False


def _is_ref(x: Any) -> bool:
    return isinstance(x, (Value, HostScalar))


def _leaves(node: Node) -> tuple:
    """The values and host scalars a node reads, each once, in order."""
    return tuple(dict.fromkeys(x for x in node.inputs if _is_ref(x)))


def _slice_views(graph: Graph, flat: Value, offset: int, value: Value) -> list[Node]:
    """Nodes that make `value` (an existing Value) a view of flat[offset : offset + size]."""
    index = (slice(offset, offset + value.size),)
    if len(value.shape) == 1:
        return [Node(ops.Getitem, (flat,), {"index": index}, value)]
    part = Value(graph, Spec((value.size,), value.dtype))
    return [
        Node(ops.Getitem, (flat,), {"index": index}, part),
        Node(ops.Reshape, (part,), {"shape": value.shape}, value),
    ]


def jit_loops(graph: Graph) -> Graph:
    """On NumPy, fused chains, selects and wheres of plain arithmetic become `loop` nodes: one
    Numba-compiled pass over memory each (see loops.py) instead of a ufunc call per member.

    On CuPy fused chains are generated kernels already, and the graph is left as it is.
    """
    if graph.device.xp is not np:
        return graph
    nodes = []
    for node in graph.nodes:
        candidate = node.op in (FUSED, SELECT, ops.Where)
        if candidate and isinstance(node.out, Value) and loop_supports(node):
            node = Node(LOOP, _leaves(node), {"body": body_of(node)}, node.out)
        nodes.append(node)
    return graph.with_nodes(nodes)


PASSES: dict[str, Pass] = {
    "simplify": simplify,
    "fold": fold_constants,
    "lower_dropout": lower_dropout,
    "lower_softmax": lower_softmax,
    "lower_select": lower_select,
    "cse": common_subexpressions,
    "dce": dead_code,
    "fuse": fuse_elementwise,
    "flatten": flatten_updates,
    "jit": jit_loops,
}
PIPELINE = (
    "dce", "simplify", "fold", "lower_dropout", "lower_softmax", "cse", "simplify", "dce",
    "lower_select", "dce", "flatten", "fuse", "jit",
)  # fmt: skip


@dataclass
class PassRecord:
    name: str
    nodes_before: int
    nodes_after: int
    seconds: float


def check_pass_names(names: Sequence[str]) -> None:
    """PassError unless every name is a pass (a typo in `--disable` fails at once)."""
    unknown = [name for name in names if name not in PASSES]
    if unknown:
        listed = ", ".join(repr(name) for name in unknown)
        raise PassError(f"unknown passes {listed}: expected some of {', '.join(PASSES)}")


def optimize(graph: Graph, disabled: Sequence[str] = ()) -> tuple[Graph, list[PassRecord]]:
    """Run the pipeline, skipping the passes named in `disabled`; report node counts."""
    check_pass_names(disabled)
    records = []
    for name in PIPELINE:
        if name in disabled:
            continue
        start = time.perf_counter()
        before = len(graph.nodes)
        graph = PASSES[name](graph)
        records.append(PassRecord(name, before, len(graph.nodes), time.perf_counter() - start))
    return graph, records
