"""Rewrites that replace nodes by others: exact algebraic simplification, and the lowering
of dropout, softmax and masked copies into the kernels of `kernels.py` (autodiff never sees
those). Each keeps the numbers the graph computes bit for bit; `passes.optimize` runs them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainctl.autograd import ops
from trainctl.autograd.graph import Graph, HostScalar, Node, Value, infer_spec
from trainctl.autograd.kernels import FLAT_INDEX, MEAN, PICK, SELECT, SUB_AT, UNIFORM
from trainctl.backend import to_host


class Rewrite:
    """What a rewrite builds: the nodes it keeps or emits, and the values it replaces."""

    def __init__(self, graph: Graph) -> None:
        self.graph, self.nodes, self.mapping = graph, [], {}

    def resolve(self, x: Any) -> Any:
        while isinstance(x, (Value, HostScalar)) and x in self.mapping:
            x = self.mapping[x]
        return x

    def resolved(self, node: Node) -> Node:
        return node.with_inputs(tuple(self.resolve(x) for x in node.inputs))

    def __call__(self, op: Any, *inputs: Any, **attrs: Any) -> Value:
        """Append a new node computing op(*inputs); its output spec is the op's shape rule."""
        out = Value(self.graph, infer_spec(op, inputs, attrs))
        self.nodes.append(Node(op, tuple(inputs), attrs, out))
        return out

    def result(self) -> Graph:
        """The graph of the nodes, every input and output redirected through the mapping."""
        outputs = {name: self.resolve(v) for name, v in self.graph.outputs.items()}
        return self.graph.with_nodes([self.resolved(node) for node in self.nodes], outputs)


def is_const(x: Any) -> bool:
    return isinstance(x, Value) and x.array is not None


def uniform_value(x: Any) -> Any:
    """The one value of a literal or of a constant whose elements are all equal, else None."""
    if isinstance(x, (bool, int, float)) and not isinstance(x, HostScalar):
        return x
    if not is_const(x):
        return None
    host = to_host(x.array).reshape(-1)
    return host[0] if host.size and bool(np.all(host == host[0])) else None


# ---------------------------------------------------------------- simplification

# Where an operand equal to one number leaves the other unchanged: (its position, the number).
_UNITS = {ops.Mul: ((1, 1), (0, 1)), ops.Div: ((1, 1),), ops.Sub: ((1, 0),)}


def simplify(graph: Graph) -> Graph:
    """Exact algebraic identities: x*1, 1*x, x/1, x-0, x**1, -(-x), transpose of transpose,
    reshape of reshape (of a contiguous value), and x * c -> x * number for a constant c of
    equal elements. Anything that could change a rounding stays."""
    rw, producers = Rewrite(graph), graph.producers()
    for node in graph.nodes:
        node = rw.resolved(node)
        if not isinstance(node.out, Value):  # host arithmetic stays as eager mode does it
            rw.nodes.append(node)
            continue
        new = _identity_input(node, producers)
        if new is None:
            new = _collapse_layout(rw, node, producers)
        if new is not None:
            rw.mapping[node.out] = new
            if rw.nodes and rw.nodes[-1].out is new:
                producers[new] = rw.nodes[-1]
            continue
        if node.op in (ops.Mul, ops.Div):
            node = node.with_inputs(_scalar_operands(node))
        producers[node.out] = node
        rw.nodes.append(node)
    return rw.result()


def _same_layout(x: Any, out: Value) -> bool:
    return isinstance(x, Value) and x.shape == out.shape and x.dtype == out.dtype


def _identity_input(node: Node, producers: dict) -> Any:
    """The input that `node` gives back unchanged, if any."""
    inputs, out = node.inputs, node.out
    for position, unit in _UNITS.get(node.op, ()):
        if uniform_value(inputs[position]) == unit and _same_layout(inputs[1 - position], out):
            return inputs[1 - position]
    if node.op is ops.Pow and node.attrs["exponent"] == 1 and _same_layout(inputs[0], out):
        return inputs[0]
    inner = producers.get(inputs[0]) if node.op is ops.Neg else None
    if inner is not None and inner.op is ops.Neg and _same_layout(inner.inputs[0], out):
        return inner.inputs[0]
    return None


def _scalar_operands(node: Node) -> tuple:
    """x * c -> x * number for a uniform constant c that only broadcasts (the mean's gradient),
    when the number keeps the dtype and shape, so that x * c == x * number exactly."""
    inputs, out = node.inputs, node.out
    for position in (0, 1) if node.op is ops.Mul else (1,):
        c = inputs[position]
        floating = is_const(c) and c.dtype == out.dtype and np.issubdtype(c.dtype, np.floating)
        number = uniform_value(c) if floating else None
        if number is not None and _same_layout(inputs[1 - position], out):
            return tuple(float(number) if i == position else x for i, x in enumerate(inputs))
    return inputs


def _collapse_layout(rw: Rewrite, node: Node, producers: dict) -> Value | None:
    """A transpose of a transpose, or a reshape of a reshape, as one op (or none)."""
    if node.op not in (ops.Transpose, ops.Reshape):
        return None
    inner = producers.get(node.inputs[0])
    if inner is None or inner.op is not node.op:
        return None
    source = inner.inputs[0]
    if node.op is ops.Transpose:
        axes = tuple(inner.attrs["axes"][a] for a in node.attrs["axes"])
        return source if axes == tuple(range(len(axes))) else rw(ops.Transpose, source, axes=axes)
    if not _contiguous(source, producers):
        return None  # a reshape of a strided view may copy or not: keep eager's choice
    if tuple(node.attrs["shape"]) == source.shape:
        return source
    return rw(ops.Reshape, source, shape=node.attrs["shape"])


def _contiguous(x: Value, producers: dict) -> bool:
    """Known to be C-contiguous: inputs, op results (not views), contiguous constants."""
    if x.array is not None:
        return bool(x.array.flags.c_contiguous)
    node = producers.get(x)
    if node is None:
        return True
    if node.op is ops.Reshape:
        return _contiguous(node.inputs[0], producers)
    return node.op.kind != "view" and node.op.storage is None  # col2im's value is strided


# ---------------------------------------------------------------- lowering


def lower_dropout(graph: Graph) -> Graph:
    """dropout(x, p, key) -> x * (uniform(key) >= p) * (1/(1-p)), as Dropout.forward computes
    it. The forward and the backward draw with the same key: after CSE the mask is drawn once."""
    rw = Rewrite(graph)
    for node in graph.nodes:
        if node.op is not ops.Dropout:
            rw.nodes.append(node)
            continue
        (x,) = node.inputs
        p = node.attrs["p"]
        u = rw(UNIFORM, key=node.attrs["key"], shape=x.shape, dtype=x.dtype)
        masked = rw(ops.Mul, x, rw(ops.GreaterEqual, u, p))
        rw.mapping[node.out] = rw(ops.Mul, masked, 1.0 / (1.0 - p))
    return rw.result()


def lower_softmax(graph: Graph) -> Graph:
    """Softmax, log-softmax and softmax cross entropy as their max/sub/exp/sum/log steps (the
    very calls their forwards make), so CSE shares them: the backward's softmax reuses the
    forward's exp and sum. softmax - one_hot(labels) becomes one subtraction at the labels."""
    rw, producers = Rewrite(graph), graph.producers()
    for node in graph.nodes:
        op, inputs = node.op, rw.resolved(node).inputs
        one_hot = producers.get(inputs[1]) if op is ops.Sub else None
        if op is ops.Softmax:
            _, e, total = _softmax_parts(rw, inputs[0], node.attrs["axis"])
            rw.mapping[node.out] = rw(ops.Div, e, total)
        elif op is ops.LogSoftmax:
            rw.mapping[node.out] = _log_softmax(rw, inputs[0], node.attrs["axis"])
        elif op is ops.SoftmaxCrossEntropy:
            rw.mapping[node.out] = _cross_entropy(rw, *inputs, node.attrs["smoothing"])
        elif one_hot is not None and _is_one_hot_of(one_hot, inputs[0]):
            index = rw(FLAT_INDEX, one_hot.inputs[0], classes=one_hot.attrs["classes"])
            rw.mapping[node.out] = rw(SUB_AT, inputs[0], index)
        else:
            rw.nodes.append(node)
    return rw.result()


def _is_one_hot_of(node: Node, probs: Any) -> bool:
    """`node` is one_hot(labels) of 2-d float `probs`' shape and dtype (no broadcasting)."""
    return (
        node.op is ops.OneHot
        and isinstance(probs, Value)
        and len(probs.shape) == 2
        and node.out.shape == probs.shape
        and node.out.dtype == probs.dtype
    )


def _softmax_parts(rw: Rewrite, x: Value, axis: int) -> tuple[Value, Value, Value]:
    z = rw(ops.Sub, x, rw(ops.Max, x, axes=(axis,), keepdims=True))
    e = rw(ops.Exp, z)
    return z, e, rw(ops.Sum, e, axes=(axis,), keepdims=True)


def _log_softmax(rw: Rewrite, x: Value, axis: int) -> Value:
    z, _, total = _softmax_parts(rw, x, axis)
    return rw(ops.Sub, z, rw(ops.Log, total))


def _cross_entropy(rw: Rewrite, logits: Value, labels: Value, smoothing: float) -> Value:
    log_probs = _log_softmax(rw, logits, 1)
    nll = rw(ops.Neg, rw(PICK, log_probs, rw(FLAT_INDEX, labels, classes=logits.shape[1])))
    if not smoothing:
        return nll
    average = rw(MEAN, log_probs, axes=(1,), keepdims=False)
    return rw(ops.Sub, rw(ops.Mul, 1.0 - smoothing, nll), rw(ops.Mul, smoothing, average))


def lower_select(graph: Graph) -> Graph:
    """where(compare(x, y), a, 0) -> select(x, y, a): the same values (a where the comparison
    holds, +0 elsewhere, NaN and inf kept), computed as a bit mask instead of a masked copy."""
    producers = graph.producers()
    nodes = []
    for node in graph.nodes:
        if node.op is ops.Where and _selects(node, producers):
            compare = producers[node.inputs[0]]
            inputs = (*compare.inputs, node.inputs[1])
            node = Node(SELECT, inputs, {"compare": compare.op.name}, node.out)
        nodes.append(node)
    return graph.with_nodes(nodes)


def _selects(node: Node, producers: dict) -> bool:
    cond, a, b = node.inputs
    compare = producers.get(cond)
    return (
        compare is not None
        and issubclass(compare.op, ops.Comparison)
        and isinstance(a, Value)
        and isinstance(b, (int, float))
        and not isinstance(b, HostScalar)
        and b == 0
        and a.shape == node.out.shape == cond.shape
        and a.dtype == node.out.dtype
        and a.dtype in (np.dtype(np.float32), np.dtype(np.float64))
    )
