"""Rewrites that replace nodes by others: exact algebraic simplification, and the lowering
of dropout, softmax and masked copies into the kernels of `kernels.py` (autodiff never sees
those). Each keeps the numbers the graph computes bit for bit; `passes.optimize` runs them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainctl.autograd import ops
from trainctl.autograd.graph import Graph, HostScalar, Node, Value
from trainctl.autograd.kernels import FLAT_INDEX, MEAN, PICK, SELECT, SUB_AT, UNIFORM
from trainctl.backend import to_host

# ---------------------------------------------------------------- helpers


def rebuild(graph: Graph, nodes: list[Node], mapping: dict) -> Graph:
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


def emit(graph: Graph, nodes: list[Node], op: Any, *inputs: Any, **attrs: Any) -> Value:
    """Append a new node computing op(*inputs) to the nodes a rewrite builds."""
    infer_inputs = (0.0 if isinstance(x, HostScalar) else x for x in inputs)
    out = Value(graph, op.infer(*infer_inputs, **attrs))
    nodes.append(Node(op, tuple(inputs), attrs, out))
    return out


def is_const(x: Any) -> bool:
    return isinstance(x, Value) and x.array is not None


def literal_equals(x: Any, number: float) -> bool:
    if isinstance(x, HostScalar):
        return False
    if isinstance(x, (bool, int, float)):
        return x == number
    if is_const(x):
        host = to_host(x.array)
        return host.size > 0 and bool(np.all(host == number))
    return False


def resolve(mapping: dict, x: Any) -> Any:
    while isinstance(x, (Value, HostScalar)) and x in mapping:
        x = mapping[x]
    return x


# ---------------------------------------------------------------- simplification


def simplify(graph: Graph) -> Graph:
    """Exact algebraic identities: x*1, 1*x, x/1, x-0, x**1, -(-x), transpose of transpose,
    reshape of reshape (of a contiguous value), and x * c -> x * number for a constant c of
    equal elements. Anything that could change a rounding stays."""
    producers = graph.producers()
    mapping: dict = {}
    nodes: list[Node] = []
    for node in graph.nodes:
        inputs = tuple(resolve(mapping, x) for x in node.inputs)
        out = node.out
        op = node.op
        same = None  # an input this node is an identity of
        if isinstance(out, Value):
            same = _identity_input(op, inputs, node.attrs, out, producers)
        if same is not None:
            mapping[out] = same
            continue
        new = _collapse_layout(graph, op, inputs, node, producers, nodes)
        if new is not None:
            mapping[out] = new
            if nodes and nodes[-1].out is new:
                producers[new] = nodes[-1]
            continue
        if op in (ops.Mul, ops.Div) and isinstance(out, Value):
            inputs = _scalar_operands(op, inputs, out)
        node = node if inputs == node.inputs else Node(node.op, inputs, node.attrs, out)
        producers[out] = node
        nodes.append(node)
    return rebuild(graph, nodes, mapping)


def _scalar_operands(op: Any, inputs: tuple, out: Value) -> tuple:
    """x * c -> x * number for a uniform constant c that only broadcasts (the mean's gradient)."""
    positions = (0, 1) if op is ops.Mul else (1,)
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
    if not is_const(x) or x.dtype != out.dtype or not np.issubdtype(x.dtype, np.floating):
        return None
    host = to_host(x.array)
    if host.size == 0 or not np.all(host == host.reshape(-1)[0]):
        return None
    return float(host.reshape(-1)[0])


def _identity_input(op: Any, inputs: tuple, attrs: dict, out: Value, producers: dict) -> Any:
    if op is ops.Mul:
        a, b = inputs
        if literal_equals(b, 1) and _same_layout(a, out):
            return a
        if literal_equals(a, 1) and _same_layout(b, out):
            return b
    if op is ops.Div and literal_equals(inputs[1], 1) and _same_layout(inputs[0], out):
        return inputs[0]
    if op is ops.Sub and literal_equals(inputs[1], 0) and _same_layout(inputs[0], out):
        return inputs[0]
    if op is ops.Pow and attrs["exponent"] == 1 and _same_layout(inputs[0], out):
        return inputs[0]
    if op is ops.Neg:
        inner = producers.get(inputs[0])
        if inner is not None and inner.op is ops.Neg and _same_layout(inner.inputs[0], out):
            return inner.inputs[0]
    return None


def _collapse_layout(
    graph: Graph, op: Any, inputs: tuple, node: Node, producers: dict, nodes: list[Node]
) -> Value | None:
    if op not in (ops.Transpose, ops.Reshape):
        return None
    inner = producers.get(inputs[0])
    if inner is None or inner.op is not op:
        return None
    source = inner.inputs[0]
    if op is ops.Transpose:
        axes = tuple(inner.attrs["axes"][a] for a in node.attrs["axes"])
        if axes == tuple(range(len(axes))):
            return source
        return emit(graph, nodes, ops.Transpose, source, axes=axes)
    if not _contiguous(source, producers):
        return None  # a reshape of a strided view may copy or not: keep eager's choice
    if tuple(node.attrs["shape"]) == source.shape:
        return source
    return emit(graph, nodes, ops.Reshape, source, shape=node.attrs["shape"])


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
        u = emit(graph, nodes, UNIFORM, key=key, shape=x.shape, dtype=x.dtype)
        keep = emit(graph, nodes, ops.GreaterEqual, u, p)
        masked = emit(graph, nodes, ops.Mul, x, keep)
        mapping[node.out] = emit(graph, nodes, ops.Mul, masked, 1.0 / (1.0 - p))
    return rebuild(graph, nodes, mapping)


def lower_softmax(graph: Graph) -> Graph:
    """Softmax, log-softmax and softmax cross entropy as their max/sub/exp/sum/log steps (the
    very calls their forwards make), so CSE shares them: the backward's softmax reuses the
    forward's exp and sum. softmax - one_hot(labels) becomes one subtraction at the labels."""
    nodes: list[Node] = []
    mapping: dict = {}
    producers = graph.producers()
    for node in graph.nodes:
        op = node.op
        inputs = tuple(resolve(mapping, x) for x in node.inputs)
        one_hot = producers.get(inputs[1]) if op is ops.Sub else None
        if op in (ops.Softmax, ops.LogSoftmax):
            axis = node.attrs["axis"]
            z, e, total = _softmax_parts(graph, nodes, inputs[0], axis)
            if op is ops.Softmax:
                mapping[node.out] = emit(graph, nodes, ops.Div, e, total)
            else:
                mapping[node.out] = emit(
                    graph, nodes, ops.Sub, z, emit(graph, nodes, ops.Log, total)
                )
        elif op is ops.SoftmaxCrossEntropy:
            logits, labels = inputs
            smoothing = node.attrs["smoothing"]
            z, e, total = _softmax_parts(graph, nodes, logits, 1)
            log_probs = emit(graph, nodes, ops.Sub, z, emit(graph, nodes, ops.Log, total))
            index = emit(graph, nodes, FLAT_INDEX, labels, classes=logits.shape[1])
            nll = emit(graph, nodes, ops.Neg, emit(graph, nodes, PICK, log_probs, index))
            if smoothing:
                average = emit(graph, nodes, MEAN, log_probs, axes=(1,), keepdims=False)
                nll = emit(
                    graph,
                    nodes,
                    ops.Sub,
                    emit(graph, nodes, ops.Mul, 1.0 - smoothing, nll),
                    emit(graph, nodes, ops.Mul, smoothing, average),
                )
            mapping[node.out] = nll
        elif one_hot is not None and _is_one_hot_of(one_hot, inputs[0]):
            labels = one_hot.inputs[0]
            index = emit(graph, nodes, FLAT_INDEX, labels, classes=one_hot.attrs["classes"])
            mapping[node.out] = emit(graph, nodes, SUB_AT, inputs[0], index)
        else:
            nodes.append(
                node if inputs == node.inputs else Node(node.op, inputs, node.attrs, node.out)
            )
    return rebuild(graph, nodes, mapping)


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
    peak = emit(graph, nodes, ops.Max, x, axes=(axis,), keepdims=True)
    z = emit(graph, nodes, ops.Sub, x, peak)
    e = emit(graph, nodes, ops.Exp, z)
    return z, e, emit(graph, nodes, ops.Sum, e, axes=(axis,), keepdims=True)


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
        and issubclass(compare.op, ops.Comparison)
        and isinstance(a, Value)
        and not isinstance(b, HostScalar)
        and isinstance(b, (int, float))
        and b == 0
        and a.shape == node.out.shape == cond.shape
        and a.dtype == node.out.dtype
        and a.dtype in (np.dtype(np.float32), np.dtype(np.float64))
    )
