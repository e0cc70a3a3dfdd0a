"""Optimization passes over the IR.

Every pass is a function Graph -> Graph that changes only what its name says, and keeps the
numbers the graph computes bit for bit (graph mode must agree with eager mode). `optimize`
runs them in order and records node counts; any pass can be switched off for debugging.
Lowering passes replace primitives by finer ones and `kernels`, which autodiff never sees.
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
from trainctl.autograd.kernels import (
    COMPARISONS,
    ELEMENTWISE,
    FLAT_INDEX,
    FUSED,
    LOOP,
    MEAN,
    PICK,
    SELECT,
    SUB_AT,
    UNIFORM,
    VIEW_OPS,
    body_of,
)
from trainctl.autograd.loops import loop_supports
from trainctl.autograd.ops import Spec
from trainctl.autograd.storage import FlatMember, FlatState
from trainctl.backend import to_host
from trainctl.errors import TrainctlError

Pass = Callable[[Graph], Graph]


class PassError(TrainctlError):
    """A pass asked for (to be switched off) that does not exist."""


# ---------------------------------------------------------------- helpers


def _rebuild(graph: Graph, nodes: list[Node], mapping: dict) -> Graph:
    """`graph` with `nodes`, each input and output redirected through `mapping`."""

    def resolve(x: Any) -> Any:
        while isinstance(x, (Value, HostScalar)) and x in mapping:
            x = mapping[x]
        return x

    rebuilt = []
    for node in nodes:
        inputs = tuple(resolve(x) for x in node.inputs)
        if any(a is not b for a, b in zip(inputs, node.inputs, strict=True)):
            node = Node(node.op, inputs, node.attrs, node.out)
        rebuilt.append(node)
    return graph.with_nodes(rebuilt, {name: resolve(v) for name, v in graph.outputs.items()})


def _emit(graph: Graph, nodes: list[Node], op: Any, *inputs: Any, **attrs: Any) -> Value:
    """Append a new node computing op(*inputs) to the nodes a rewrite builds."""
    infer_inputs = (0.0 if isinstance(x, HostScalar) else x for x in inputs)
    out = Value(graph, op.infer(*infer_inputs, **attrs))
    nodes.append(Node(op, tuple(inputs), attrs, out))
    return out


def _is_const(x: Any) -> bool:
    return isinstance(x, Value) and x.array is not None


def _literal_equals(x: Any, number: float) -> bool:
    if isinstance(x, HostScalar):
        return False
    if isinstance(x, (bool, int, float)):
        return x == number
    if _is_const(x):
        host = to_host(x.array)
        return host.size > 0 and bool(np.all(host == number))
    return False


def _consumers(graph: Graph) -> Counter:
    uses: Counter = Counter()
    for node in graph.nodes:
        for x in node.inputs:
            if isinstance(x, (Value, HostScalar)):
                uses[x] += 1
    for v in graph.outputs.values():
        uses[v] += 1
    return uses


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
    mapping: dict = {}
    seen_constants: dict = {}
    for c in graph.constants:
        if c.array is not None and c.size <= 64:
            key = (c.dtype.str, c.shape, to_host(c.array).tobytes())
            mapping.setdefault(c, seen_constants.setdefault(key, c))
            if mapping[c] is c:
                del mapping[c]
    seen: dict = {}
    nodes = []
    for node in graph.nodes:
        inputs = tuple(_resolve(mapping, x) for x in node.inputs)
        key = (node.op.name, tuple(_key(x) for x in inputs), repr(sorted(node.attrs.items())))
        if key in seen:
            mapping[node.out] = seen[key]
            continue
        seen[key] = node.out
        nodes.append(node if inputs == node.inputs else Node(node.op, inputs, node.attrs, node.out))
    return _rebuild(graph, nodes, mapping)


def _resolve(mapping: dict, x: Any) -> Any:
    while isinstance(x, (Value, HostScalar)) and x in mapping:
        x = mapping[x]
    return x


def fold_constants(graph: Graph) -> Graph:
    """Run, once at compile time, every primitive whose inputs are all constants.

    The op's own forward runs on the device's array module, so the folded array is exactly
    what eager mode computes at every step.
    """
    xp = graph.device.xp
    mapping: dict = {}
    nodes = []
    constants = list(graph.constants)
    for node in graph.nodes:
        inputs = tuple(_resolve(mapping, x) for x in node.inputs)
        foldable = (
            isinstance(node.op, type)
            and issubclass(node.op, ops.Op)
            and isinstance(node.out, Value)
            and any(_is_const(x) for x in inputs)
            and all(_is_const(x) or isinstance(x, (bool, int, float)) for x in inputs)
            and not any(isinstance(x, HostScalar) for x in inputs)
            and not any(isinstance(a, RngKey) for a in node.attrs.values())
        )
        if not foldable:
            nodes.append(
                node if inputs == node.inputs else Node(node.op, inputs, node.attrs, node.out)
            )
            continue
        arrays = [x.array if isinstance(x, Value) else x for x in inputs]
        result = xp.asarray(node.op.forward(xp, *arrays, **node.attrs))
        folded = Value(graph, Spec(result.shape, result.dtype), array=result)
        constants.append(folded)
        mapping[node.out] = folded
    out = _rebuild(graph, nodes, mapping)
    out.constants = constants
    return out


def simplify(graph: Graph) -> Graph:
    """Exact algebraic identities: x*1, 1*x, x/1, x-0, x**1, -(-x), transpose of transpose,
    reshape of reshape (of a contiguous value), and x * c -> x * number for a constant c of
    equal elements. Anything that could change a rounding stays."""
    producers = graph.producers()
    mapping: dict = {}
    nodes: list[Node] = []
    for node in graph.nodes:
        inputs = tuple(_resolve(mapping, x) for x in node.inputs)
        out = node.out
        name = node.op.name
        same = None  # an input this node is an identity of
        if isinstance(out, Value):
            same = _identity_input(name, inputs, node.attrs, out, producers)
        if same is not None:
            mapping[out] = same
            continue
        new = _collapse_layout(graph, name, inputs, node, producers, nodes)
        if new is not None:
            mapping[out] = new
            if nodes and nodes[-1].out is new:
                producers[new] = nodes[-1]
            continue
        if name in ("mul", "div") and isinstance(out, Value):
            inputs = _scalar_operands(name, inputs, out)
        node = node if inputs == node.inputs else Node(node.op, inputs, node.attrs, out)
        producers[out] = node
        nodes.append(node)
    return _rebuild(graph, nodes, mapping)


def _scalar_operands(name: str, inputs: tuple, out: Value) -> tuple:
    """x * c -> x * number for a uniform constant c that only broadcasts (the mean's gradient)."""
    positions = (0, 1) if name == "mul" else (1,)
    for position in positions:
        other = inputs[1 - position]
        number = _uniform_scalar(inputs[position], out)
        if number is not None and _same_layout(other, out):
            replaced = list(inputs)
            replaced[position] = number
            return tuple(replaced)
    return inputs


def _same_layout(x: Any, out: Value) -> bool:
    return isinstance(x, Value) and x.shape == out.shape and x.dtype == out.dtype


def _uniform_scalar(x: Any, out: Value) -> float | None:
    """The one value of a constant array whose elements are all equal, when multiplying by it
    as a Python number gives the same dtype and shape (so x * c == x * number exactly)."""
    if not _is_const(x) or x.dtype != out.dtype or not np.issubdtype(x.dtype, np.floating):
        return None
    host = to_host(x.array)
    if host.size == 0 or not np.all(host == host.reshape(-1)[0]):
        return None
    return float(host.reshape(-1)[0])


def _identity_input(name: str, inputs: tuple, attrs: dict, out: Value, producers: dict) -> Any:
    if name == "mul":
        a, b = inputs
        if _literal_equals(b, 1) and _same_layout(a, out):
            return a
        if _literal_equals(a, 1) and _same_layout(b, out):
            return b
    if name == "div" and _literal_equals(inputs[1], 1) and _same_layout(inputs[0], out):
        return inputs[0]
    if name == "sub" and _literal_equals(inputs[1], 0) and _same_layout(inputs[0], out):
        return inputs[0]
    if name == "pow" and attrs["exponent"] == 1 and _same_layout(inputs[0], out):
        return inputs[0]
    if name == "neg":
        inner = producers.get(inputs[0])
        if inner is not None and inner.op.name == "neg" and _same_layout(inner.inputs[0], out):
            return inner.inputs[0]
    return None


def _collapse_layout(
    graph: Graph, name: str, inputs: tuple, node: Node, producers: dict, nodes: list[Node]
) -> Value | None:
    if name not in ("transpose", "reshape"):
        return None
    inner = producers.get(inputs[0])
    if inner is None or inner.op.name != name:
        return None
    source = inner.inputs[0]
    if name == "transpose":
        axes = tuple(inner.attrs["axes"][a] for a in node.attrs["axes"])
        if axes == tuple(range(len(axes))):
            return source
        return _emit(graph, nodes, ops.Transpose, source, axes=axes)
    if not _contiguous(source, producers):
        return None  # a reshape of a strided view may copy or not: keep eager's choice
    if tuple(node.attrs["shape"]) == source.shape:
        return source
    return _emit(graph, nodes, ops.Reshape, source, shape=node.attrs["shape"])


def _contiguous(x: Value, producers: dict) -> bool:
    """Known to be C-contiguous: inputs, op results (not views), contiguous constants."""
    if x.array is not None:
        return bool(x.array.flags.c_contiguous)
    node = producers.get(x)
    if node is None:
        return True
    if node.op.name == "reshape":
        return _contiguous(node.inputs[0], producers)
    return node.op.name not in VIEW_OPS and node.op.name != "col2im"


def lower_dropout(graph: Graph) -> Graph:
    """dropout(x, p, key) -> x * (uniform(key) >= p) * (1/(1-p)), as Dropout.forward computes
    it. The forward and the backward draw with the same key: after CSE the mask is drawn once."""
    nodes: list[Node] = []
    mapping: dict = {}
    for node in graph.nodes:
        if node.op is not ops.Dropout:
            nodes.append(node)
            continue
        (x,) = node.inputs
        p, key = node.attrs["p"], node.attrs["key"]
        u = _emit(graph, nodes, UNIFORM, key=key, shape=x.shape, dtype=x.dtype)
        keep = _emit(graph, nodes, ops.GreaterEqual, u, p)
        masked = _emit(graph, nodes, ops.Mul, x, keep)
        mapping[node.out] = _emit(graph, nodes, ops.Mul, masked, 1.0 / (1.0 - p))
    return _rebuild(graph, nodes, mapping)


def lower_softmax(graph: Graph) -> Graph:
    """Softmax, log-softmax and softmax cross entropy as their max/sub/exp/sum/log steps (the
    very calls their forwards make), so CSE shares them: the backward's softmax reuses the
    forward's exp and sum. softmax - one_hot(labels) becomes one subtraction at the labels."""
    nodes: list[Node] = []
    mapping: dict = {}
    producers = graph.producers()
    for node in graph.nodes:
        name = node.op.name
        inputs = tuple(_resolve(mapping, x) for x in node.inputs)
        one_hot = producers.get(inputs[1]) if name == "sub" else None
        if name in ("softmax", "log_softmax"):
            axis = node.attrs["axis"]
            z, e, total = _softmax_parts(graph, nodes, inputs[0], axis)
            if name == "softmax":
                mapping[node.out] = _emit(graph, nodes, ops.Div, e, total)
            else:
                mapping[node.out] = _emit(
                    graph, nodes, ops.Sub, z, _emit(graph, nodes, ops.Log, total)
                )
        elif name == "softmax_cross_entropy":
            logits, labels = inputs
            smoothing = node.attrs["smoothing"]
            z, e, total = _softmax_parts(graph, nodes, logits, 1)
            log_probs = _emit(graph, nodes, ops.Sub, z, _emit(graph, nodes, ops.Log, total))
            index = _emit(graph, nodes, FLAT_INDEX, labels, classes=logits.shape[1])
            nll = _emit(graph, nodes, ops.Neg, _emit(graph, nodes, PICK, log_probs, index))
            if smoothing:
                average = _emit(graph, nodes, MEAN, log_probs, axes=(1,), keepdims=False)
                nll = _emit(
                    graph,
                    nodes,
                    ops.Sub,
                    _emit(graph, nodes, ops.Mul, 1.0 - smoothing, nll),
                    _emit(graph, nodes, ops.Mul, smoothing, average),
                )
            mapping[node.out] = nll
        elif one_hot is not None and _is_one_hot_of(one_hot, inputs[0]):
            labels = one_hot.inputs[0]
            index = _emit(graph, nodes, FLAT_INDEX, labels, classes=one_hot.attrs["classes"])
            mapping[node.out] = _emit(graph, nodes, SUB_AT, inputs[0], index)
        else:
            nodes.append(
                node if inputs == node.inputs else Node(node.op, inputs, node.attrs, node.out)
            )
    return _rebuild(graph, nodes, mapping)


def _is_one_hot_of(node: Node, probs: Any) -> bool:
    """`node` is one_hot(labels) of 2-d float `probs`' shape and dtype (no broadcasting)."""
    return (
        node.op is ops.OneHot
        and isinstance(probs, Value)
        and len(probs.shape) == 2
        and node.out.shape == probs.shape
        and node.out.dtype == probs.dtype
    )


def _softmax_parts(
    graph: Graph, nodes: list[Node], x: Value, axis: int
) -> tuple[Value, Value, Value]:
    peak = _emit(graph, nodes, ops.Max, x, axes=(axis,), keepdims=True)
    z = _emit(graph, nodes, ops.Sub, x, peak)
    e = _emit(graph, nodes, ops.Exp, z)
    return z, e, _emit(graph, nodes, ops.Sum, e, axes=(axis,), keepdims=True)


def lower_select(graph: Graph) -> Graph:
    """where(compare(x, y), a, 0) -> select(x, y, a): the same values (a where the comparison
    holds, +0 elsewhere, NaN and inf kept), computed as a bit mask instead of a masked copy."""
    producers = graph.producers()
    nodes = []
    for node in graph.nodes:
        if node.op is ops.Where and _selects(node, producers):
            compare = producers[node.inputs[0]]
            x, y = compare.inputs
            a = node.inputs[1]
            node = Node(SELECT, (x, y, a), {"compare": compare.op.name}, node.out)
        nodes.append(node)
    return graph.with_nodes(nodes)


def _selects(node: Node, producers: dict) -> bool:
    cond, a, b = node.inputs
    compare = producers.get(cond)
    return (
        compare is not None
        and compare.op.name in COMPARISONS
        and isinstance(a, Value)
        and not isinstance(b, HostScalar)
        and isinstance(b, (int, float))
        and b == 0
        and a.shape == node.out.shape == cond.shape
        and a.dtype == node.out.dtype
        and a.dtype in (np.dtype(np.float32), np.dtype(np.float64))
    )


def fuse_elementwise(graph: Graph) -> Graph:
    """Merge chains of elementwise nodes into one `fused` node each.

    A node joins the consumer it feeds when that consumer is elementwise with the same output
    shape and is its only reader (and the value is no output of the graph). On CuPy a fused node
    becomes one generated kernel; on NumPy a chain of in-place ufunc calls on one buffer.
    """
    uses = _consumers(graph)
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
        body = sorted(body, key=graph.nodes.index)
        inner_values = {m.out for m in body}
        leaves: list[Any] = []
        for member in body:
            for x in member.inputs:
                if isinstance(x, (Value, HostScalar)) and x not in inner_values and x not in leaves:
                    leaves.append(x)
        nodes.append(Node(FUSED, tuple(leaves), {"body": tuple(body)}, node.out))
    return graph.with_nodes(nodes)


def _fusible(node: Node) -> bool:
    return isinstance(node.out, Value) and node.op.name in ELEMENTWISE


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


@dataclass(eq=False)
class _FlatSlot:
    value: Value
    members: list[Any]  # StateSlot of each member, in order
    offsets: list[int]


class _Flattener:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.nodes = list(graph.nodes)
        self.outputs = dict(graph.outputs)
        self.slots = {slot.value: slot for slot in graph.state}
        self.flat_slots: dict[tuple, _FlatSlot] = {}
        self.member_of: dict[Any, tuple[_FlatSlot, int]] = {}  # merged slot name -> position
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
        merged = {slot.name for flat in self.flat_slots.values() for slot in flat.members}
        state = [slot for slot in self.graph.state if slot.name not in merged]
        for flat in self.flat_slots.values():
            members = [
                FlatMember(slot.name, slot.source, slot.value.shape, offset)
                for slot, offset in zip(flat.members, flat.offsets, strict=True)
            ]
            state.append(StateSlot(flat.value.name, flat.value, FlatState(tuple(members))))
        out = self.graph.with_nodes(self.prologue + self.nodes, self.outputs)
        out.state = state
        return dead_code(out)

    def _flatten(self, members: list[Node]) -> None:
        signature = _update_signature(members[0])
        arrays = [kind[0] == "array" for kind in signature[1]]
        columns = list(zip(*(_leaves(node) for node in members), strict=True))
        kinds = [self._kind(column, array) for column, array in zip(columns, arrays, strict=True)]
        if None in kinds or not any(kind[0] in ("state", "new_state") for kind in kinds):
            return
        index = {node: i for i, node in enumerate(self.nodes)}
        outs = {node.out for node in members}
        inputs = {x for column in columns for x in column}
        inputs |= {kind[1] for kind in kinds if kind[0] == "flat"}
        inputs |= {self.concats[k[1]] for k in kinds if k[0] == "computed" and k[1] in self.concats}
        made = [index[n] for n in self.nodes if n.out in inputs]
        ready = max(made, default=-1)  # the flat node goes right after its last input...
        readers = [i for i, n in enumerate(self.nodes) if n not in members and outs & set(n.inputs)]
        if ready >= min(readers, default=len(self.nodes)) or any(
            self.nodes[i] in members for i in made
        ):
            return  # ...which must come before the first reader of a result
        target = self._target(members, kinds)
        if target is False:
            return
        kinds = [
            ("state", self._flat_slot(kind[1])) if kind[0] == "new_state" else kind
            for kind in kinds
        ]
        before: list[Node] = []
        flat_leaves = []
        for kind in kinds:
            if kind[0] == "state":
                flat_leaves.append(kind[1].value)
            elif kind[0] == "computed":
                flat_leaves.append(self._concat(kind[1], before))
            else:
                flat_leaves.append(kind[1])
        size = sum(node.out.size for node in members)
        flat_out = self._flat_node(members[0], flat_leaves, (size,), before)
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
            flat = kinds[target][1]
            for slot in flat.members:
                self.outputs.pop(slot.name, None)
            self.outputs[flat.value.name] = flat_out

    def _kind(self, column: tuple, array: bool) -> tuple | None:
        """How a leaf position becomes flat: the same value for all ("same"), a flat state
        slot ("state", or "new_state" to create), an earlier group's flat output ("flat"),
        or a concatenation of computed values ("computed")."""
        if not array:
            return ("same", column[0])
        if all(x in self.slots or self._merged(x) for x in column):
            for flat in self.flat_slots.values():
                values = [slot.value for slot in flat.members]
                if list(column) == values:
                    return ("state", flat)
                if any(x in values for x in column):
                    return None  # merged before, in another grouping
            if len(set(column)) != len(column) or len({x.dtype for x in column}) != 1:
                return None
            return ("new_state", column)
        previous = self.flat_outputs.get(tuple(column))
        if previous is not None:
            return ("flat", previous)
        produced = {node.out for node in self.nodes}
        if all(x in produced for x in column):
            return ("computed", tuple(column))
        return None

    def _merged(self, x: Value) -> bool:
        return any(x is slot.value for flat in self.flat_slots.values() for slot in flat.members)

    def _flat_slot(self, column: tuple) -> _FlatSlot:
        slots = [self.slots[x] for x in column]
        offsets, total = [], 0
        for slot in slots:
            offsets.append(total)
            total += slot.value.size
        name = f"flat:{slots[0].name}..{slots[-1].name}"
        value = Value(self.graph, Spec((total,), column[0].dtype), name=name)
        flat = _FlatSlot(value, slots, offsets)
        self.flat_slots[tuple(column)] = flat
        for slot, offset in zip(slots, offsets, strict=True):
            self.prologue += _slice_views(self.graph, value, offset, slot.value)
        return flat

    def _target(self, members: list[Node], kinds: list[tuple]) -> int | None | bool:
        """The state position whose slots the members' outputs are the new values of (None
        when the outputs are no state), or False when the outputs fit no position."""
        names = {id(v): name for name, v in self.outputs.items()}
        produced = [names.get(id(node.out)) for node in members]
        if all(name is None for name in produced):
            return None
        for position, kind in enumerate(kinds):
            if kind[0] == "state":
                names = [slot.name for slot in kind[1].members]
            elif kind[0] == "new_state":
                names = [self.slots[x].name for x in kind[1]]
            else:
                continue
            if produced == names:
                return position
        return False

    def _concat(self, column: tuple, before: list[Node]) -> Value:
        flat = self.concats.get(column)
        if flat is None:
            parts = []
            for x in column:
                if len(x.shape) == 1:
                    parts.append(x)
                    continue
                part = Value(self.graph, Spec((x.size,), x.dtype))
                before.append(Node(ops.Reshape, (x,), {"shape": (x.size,)}, part))
                parts.append(part)
            size = sum(x.size for x in column)
            flat = Value(self.graph, Spec((size,), column[0].dtype))
            before.append(Node(ops.Concatenate, tuple(parts), {"axis": 0}, flat))
            self.concats[column] = flat
        return flat

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
        for flat in self.flat_slots.values():
            if flat.value.name in self.outputs:
                continue
            pending = [slot for slot in flat.members if slot.name in self.outputs]
            if not pending:
                continue
            parts = []
            tail: list[Node] = []
            for slot in flat.members:
                new = self.outputs.pop(slot.name, slot.value)
                if len(new.shape) != 1:
                    part = Value(self.graph, Spec((new.size,), new.dtype))
                    tail.append(Node(ops.Reshape, (new,), {"shape": (new.size,)}, part))
                    new = part
                parts.append(new)
            out = Value(self.graph, Spec(flat.value.shape, flat.value.dtype))
            tail.append(Node(ops.Concatenate, tuple(parts), {"axis": 0}, out))
            self.nodes += tail
            self.outputs[flat.value.name] = out


def _is_ref(x: Any) -> bool:
    return isinstance(x, (Value, HostScalar))


def _leaves(node: Node) -> tuple:
    if node.op is FUSED:
        return node.inputs
    seen: list = []
    for x in node.inputs:
        if _is_ref(x) and x not in seen:
            seen.append(x)
    return tuple(seen)


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
        refs = []
        for x in member.inputs:
            if x in index:
                refs.append(index[x])
            elif _is_ref(x):
                refs.append(("member", [m.out for m in body].index(x)))
            else:
                refs.append(("literal", type(x).__name__, repr(x)))
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
            leaves = [x for x in node.inputs if isinstance(x, (Value, HostScalar))]
            node = Node(LOOP, tuple(dict.fromkeys(leaves)), {"body": body_of(node)}, node.out)
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


def optimize(
    graph: Graph, disabled: Sequence[str] = (), pipeline: Sequence[str] = PIPELINE
) -> tuple[Graph, list[PassRecord]]:
    """Run the pipeline, skipping the passes named in `disabled`; report node counts."""
    check_pass_names(disabled)
    records = []
    for name in pipeline:
        if name in disabled:
            continue
        start = time.perf_counter()
        before = len(graph.nodes)
        graph = PASSES[name](graph)
        records.append(PassRecord(name, before, len(graph.nodes), time.perf_counter() - start))
    return graph, records
