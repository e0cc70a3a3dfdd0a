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
    """Horizontal fusion: the same elementwise update applied to every parameter (momentum,
    Adam's moments, the parameter itself) becomes one node over flat arrays.

    Nodes that compute the same chain (same ops, numbers and host scalars) on arrays of
    different shapes form a group. Their state inputs are merged into one flat state slot whose
    members are views, so the forward and backward read the same memory; values computed by
    other nodes (the gradients) are concatenated, which the planner does in place by placing
    each gradient in its slice. One ufunc call then updates every parameter, exactly as the
    separate calls would element by element.
    """
    return _Flattener(graph).run()


class _Flattener:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.nodes = list(graph.nodes)
        self.outputs = dict(graph.outputs)
        self.slots = {slot.value: slot for slot in graph.state}
        self.flat_slots: dict[tuple, StateSlot] = {}  # the merged slots' values -> flat slot
        self.flat_outputs: dict[tuple, Value] = {}  # member outputs -> flat output
        self.concats: dict[tuple, Value] = {}
        self.prologue: list[Node] = []

    def run(self) -> Graph:
        groups: dict[tuple, list[Node]] = {}
        for node in self.nodes:
            signature = _update_signature(node)
            if signature is not None:
                groups.setdefault(signature, []).append(node)
        for members in groups.values():
            if len(members) > 1:
                self._flatten(members)
        if not self.flat_slots:
            return self.graph
        self._close_outputs()
        merged = {x for column in self.flat_slots for x in column}
        state = [slot for slot in self.graph.state if slot.value not in merged]
        out = self.graph.with_nodes(self.prologue + self.nodes, self.outputs)
        out.state = state + list(self.flat_slots.values())
        return dead_code(out)

    def _flatten(self, members: list[Node]) -> None:
        shapes = _update_signature(members[0])[1]
        columns = list(zip(*(_leaves(node) for node in members), strict=True))
        arrays = [shape[0] == "array" for shape in shapes]
        kinds = [self._kind(column, array) for column, array in zip(columns, arrays, strict=True)]
        if None in kinds or not any(kind == "state" for kind, _ in kinds):
            return
        outs = {node.out for node in members}
        inputs = {x for column in columns for x in column}
        inputs |= {x for kind, x in kinds if kind == "flat"}
        inputs |= {self.concats[x] for kind, x in kinds if kind == "computed" and x in self.concats}
        made = [i for i, n in enumerate(self.nodes) if n.out in inputs]
        readers = [i for i, n in enumerate(self.nodes) if n not in members and outs & set(n.inputs)]
        ready = max(made, default=-1)  # the flat node goes right after its last input...
        if ready >= min(readers, default=len(self.nodes)) or any(
            self.nodes[i] in members for i in made
        ):
            return  # ...which must come before the first reader of a result
        target = self._target(members, kinds)
        if target is False:
            return
        flat = {x: self._flat_slot(x).value for kind, x in kinds if kind == "state"}
        before: list[Node] = []
        flat |= {x: self._concat(x, before) for kind, x in kinds if kind == "computed"}
        leaves = [flat[x] if kind in ("state", "computed") else x for kind, x in kinds]
        size = sum(node.out.size for node in members)
        flat_out = self._flat_node(members[0], leaves, (size,), before)
        offset = 0
        for node in members:
            before += _slice_views(self.graph, flat_out, offset, node.out)
            offset += node.out.size
        anchor = self.nodes[ready] if ready >= 0 else None
        self.nodes = [node for node in self.nodes if node not in members]
        at = self.nodes.index(anchor) + 1 if anchor is not None else 0
        self.nodes[at:at] = before
        self.flat_outputs[tuple(node.out for node in members)] = flat_out
        if target is not None:
            column = kinds[target][1]
            for x in column:
                self.outputs.pop(self.slots[x].name, None)
            self.outputs[self.flat_slots[column].name] = flat_out

    def _kind(self, column: tuple, array: bool) -> tuple | None:
        """How a leaf position becomes flat: the same value for all ("same"), a flat state
        slot over the column ("state"), an earlier group's flat output ("flat"), or a
        concatenation of computed values ("computed"); None when it cannot."""
        if not array:
            return ("same", column[0])
        if all(x in self.slots for x in column):
            for merged in self.flat_slots:
                if merged == column:
                    return ("state", column)
                if set(merged) & set(column):
                    return None  # merged before, in another grouping
            if len(set(column)) != len(column) or len({x.dtype for x in column}) != 1:
                return None
            return ("state", column)
        previous = self.flat_outputs.get(column)
        if previous is not None:
            return ("flat", previous)
        produced = {node.out for node in self.nodes}
        if all(x in produced for x in column):
            return ("computed", column)
        return None

    def _flat_slot(self, column: tuple) -> StateSlot:
        """The flat state slot over the slots of `column`, made (with views of it for its
        members, in the prologue) the first time."""
        if column in self.flat_slots:
            return self.flat_slots[column]
        members, total = [], 0
        for x in column:
            slot = self.slots[x]
            members.append(FlatMember(slot.name, slot.source, x.shape, total))
            total += x.size
        name = f"flat:{members[0].name}..{members[-1].name}"
        value = Value(self.graph, Spec((total,), column[0].dtype), name=name)
        for x, member in zip(column, members, strict=True):
            self.prologue += _slice_views(self.graph, value, member.offset, x)
        flat = self.flat_slots[column] = StateSlot(name, value, FlatState(tuple(members)))
        return flat

    def _target(self, members: list[Node], kinds: list[tuple]) -> int | None | bool:
        """The state position whose slots the members' outputs are the new values of (None
        when the outputs are no state), or False when the outputs fit no position."""
        names = {id(v): name for name, v in self.outputs.items()}
        produced = [names.get(id(node.out)) for node in members]
        if all(name is None for name in produced):
            return None
        for position, (kind, column) in enumerate(kinds):
            if kind == "state" and produced == [self.slots[x].name for x in column]:
                return position
        return False

    def _concat(self, column: tuple, before: list[Node]) -> Value:
        if column not in self.concats:
            self.concats[column] = _concatenate(self.graph, column, before)
        return self.concats[column]

    def _flat_node(self, model: Node, leaves: list, shape: tuple, before: list) -> Value:
        """`model`'s computation over the flat leaves, appended to `before`."""
        mapping = dict(zip(_leaves(model), leaves, strict=True))
        flat_body = []
        for member in body_of(model):
            out = Value(self.graph, Spec(shape, member.out.dtype))
            inputs = tuple(mapping.get(x, x) if _is_ref(x) else x for x in member.inputs)
            flat_body.append(Node(member.op, inputs, member.attrs, out))
            mapping[member.out] = out
        if model.op is FUSED:
            before.append(Node(FUSED, tuple(leaves), {"body": tuple(flat_body)}, out))
        else:
            before.append(flat_body[0])
        return out

    def _close_outputs(self) -> None:
        """A merged slot whose new value no flattened node computes: assemble the flat slot's
        new contents from the members' new (or unchanged) values."""
        for column, flat in self.flat_slots.items():
            names = [self.slots[x].name for x in column]
            if flat.name in self.outputs or not any(name in self.outputs for name in names):
                continue
            parts = [self.outputs.pop(name, x) for name, x in zip(names, column, strict=True)]
            tail: list[Node] = []
            self.outputs[flat.name] = _concatenate(self.graph, parts, tail)
            self.nodes += tail


def _concatenate(graph: Graph, values: Sequence[Value], nodes: list[Node]) -> Value:
    """`values` flattened and concatenated, by nodes appended to `nodes`."""
    parts = []
    for x in values:
        if len(x.shape) != 1:
            part = Value(graph, Spec((x.size,), x.dtype))
            nodes.append(Node(ops.Reshape, (x,), {"shape": (x.size,)}, part))
            x = part
        parts.append(x)
    out = Value(graph, Spec((sum(x.size for x in values),), values[0].dtype))
    nodes.append(Node(ops.Concatenate, tuple(parts), {"axis": 0}, out))
    return out


def _is_ref(x: Any) -> bool:
    return isinstance(x, (Value, HostScalar))


def _leaves(node: Node) -> tuple:
    """The values and host scalars a node reads, each once, in order."""
    return tuple(dict.fromkeys(x for x in node.inputs if _is_ref(x)))


def _update_signature(node: Node) -> tuple | None:
    """What must be equal for two nodes to be one flat node: the chain's ops, attributes,
    numbers and host scalars; arrays of the node's own shape may differ, others (a clipping
    scale) must be the same value."""
    out = node.out
    if not isinstance(out, Value) or (not _fusible(node) and node.op is not FUSED):
        return None
    body = body_of(node)
    if any(member.out.shape != out.shape for member in body):
        return None
    leaves = _leaves(node)
    index = {x: ("leaf", i) for i, x in enumerate(leaves)}
    shape_of = []
    for leaf in leaves:
        if isinstance(leaf, HostScalar) or leaf.shape != out.shape:
            shape_of.append(("same", id(leaf)))
        else:
            shape_of.append(("array", str(leaf.dtype)))
    parts = []
    for position, member in enumerate(body):
        refs = [
            index[x] if _is_ref(x) else ("literal", type(x).__name__, repr(x))
            for x in member.inputs
        ]
        index[member.out] = ("member", position)
        parts.append((member.op.name, repr(sorted(member.attrs.items())), tuple(refs)))
    return (str(out.dtype), tuple(shape_of), tuple(parts))


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
    "lower_select", "dce", "fuse", "flatten", "jit",
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
