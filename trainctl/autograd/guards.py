"""Guards: graph mode facing Python control flow on tensor values, as `torch.compile` does.

When a model branches on a value (`if h.mean() > 0:`, a `while` on a norm) or reads a number
out of it (`.item()`, `float()`, `int()`), graph mode traces with the real batch at hand:
`GuardRecorder` computes the value with the ops' own forwards, in eager mode's order (so bit
for bit what eager mode would see), hands it to the trace and records a `Guard` of the value's
expression and the outcome. The graph is specialised on that outcome: one branch, one unrolled
loop count. Before each replay `GuardProgram` recomputes only the guard expressions on the
coming batch and state, changing nothing: a step whose outcomes differ is never applied, the
caller traces the new combination (or falls back to eager mode) instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainctl.autograd.compile import compile_graph
from trainctl.autograd.graph import (
    EAGER_HINT,
    Graph,
    HostScalar,
    Node,
    RngKey,
    Tracer,
    TracingError,
    Value,
    call_text,
    operand_label,
)

READS = {"bool": bool, "item": lambda a: a.item(), "float": float, "int": int}


@dataclass(frozen=True)
class Guard:
    """`read(value)` (bool(), .item(), float() or int()) gave `expected` while tracing."""

    value: Value
    read: str
    expected: Any

    def holds(self, array: Any) -> bool:
        got = READS[self.read](array)
        same_nan = isinstance(got, float) and math.isnan(got) and math.isnan(self.expected)
        return got == self.expected or same_nan


def _closure(graph: Graph, targets: Sequence[Value], known: Any = ()) -> list[Node]:
    """The nodes that `targets` depend on (short of the `known` values), in the graph's
    execution order."""
    live = {v for v in targets if v not in known}
    needed = []
    for node in reversed(graph.nodes):
        if node.out not in live:
            continue
        needed.append(node)
        for x in node.inputs:
            if isinstance(x, HostScalar):
                raise TracingError(
                    f"a Python decision on {targets[-1].label} depends on the per-step value "
                    f"{x.label}, which has no value while tracing"
                )
            if isinstance(x, Value) and x not in known:
                live.add(x)
    return needed[::-1]


def _leaves(nodes: list[Node], targets: Sequence[Value]) -> list[Value]:
    """The values the nodes read but do not compute: inputs, state, constants."""
    made = {node.out for node in nodes}
    read = [x for node in nodes for x in node.inputs] + list(targets)
    return list(dict.fromkeys(x for x in read if isinstance(x, Value) and x not in made))


def _batch_array(graph: Graph, value: Value, array: Any) -> Any:
    """A batch array as the step reads it: float data in the traced dtype, on the device."""
    return graph.device.xp.ascontiguousarray(graph.device.asarray(array, dtype=value.dtype))


class GuardRecorder:
    """While a step is traced with its real batch: evaluates a value the model reads, and
    records the guard. Values computed once are kept, so a `while` loop costs one new
    iteration per check."""

    def __init__(self, tracer: Tracer, batch: Sequence[Any]) -> None:
        self.tracer, self.graph, self.batch = tracer, tracer.graph, batch
        self.guards: list[Guard] = []
        self.known: dict[Value, Any] = {}

    def read(self, value: Value, how: str) -> Any:
        result = READS[how](self.concrete(value))
        self.guards.append(Guard(value, how, result))
        return result

    def concrete(self, value: Value) -> Any:
        """The array eager mode would hold for `value` at this point of the step."""
        nodes = _closure(self.graph, [value], self.known)
        for leaf in _leaves(nodes, [value]):
            if leaf not in self.known:
                self.known[leaf] = self._leaf(leaf)
        xp, key_now = self.graph.device.xp, self.tracer.key_now
        with np.errstate(all="ignore"):
            for node in nodes:
                args = [self.known[x] if isinstance(x, Value) else x for x in node.inputs]
                attrs = {
                    k: key_now(v) if isinstance(v, RngKey) else v for k, v in node.attrs.items()
                }
                out = node.op.forward(xp, *args, **attrs)
                self.known[node.out] = np.asarray(out) if isinstance(out, np.generic) else out
        return self.known[value]

    def _leaf(self, value: Value) -> Any:
        if value.array is not None:
            return value.array
        if value in self.graph.inputs:
            return _batch_array(self.graph, value, self.batch[self.graph.inputs.index(value)])
        tensor = self.tracer.originals.get(value)
        if tensor is None:  # optimizer state: its entries are made by the step itself
            raise TracingError(
                f"a Python decision on {value.label} cannot be guarded (only the batch, "
                f"parameters and buffers can be read while tracing): {EAGER_HINT}"
            )
        return tensor.data


class GuardProgram:
    """The guard expressions of one trace, compiled into a small program of their nodes
    (each op's forward, no passes, no buffers of the step): `check` runs it on a batch."""

    def __init__(self, graph: Graph, guards: list[Guard]) -> None:
        self.graph, self.guards = graph, guards
        targets = [g.value for g in guards]
        nodes = _closure(graph, targets)
        leaves = _leaves(nodes, targets)
        inputs = [leaf for leaf in leaves if leaf.array is None]
        # Where each input is read from: the index of a batch array, or a state slot.
        sources = {slot.value: slot for slot in graph.state}
        sources.update({x: i for i, x in enumerate(graph.inputs)})
        self.reads = [(sources[leaf], leaf) for leaf in inputs]
        program_graph = Graph(
            graph.device,
            inputs=inputs,
            constants=[x for x in leaves if x.array is not None],
            nodes=nodes,
            outputs={f"guard{i}": v for i, v in enumerate(targets)},
            generators=graph.generators,
        )
        self.program = compile_graph(program_graph, {}, plan_memory=False)
        self.lines = guard_lines(graph)

    def check(self, batch: Sequence[Any]) -> bool:
        """True when every guard gives the outcome traced, on `batch` and the state as it is
        now (parameters and buffers read where the model holds them). Nothing is changed."""
        graph_inputs = {}
        for name, (read, value) in zip(self.program.input_names, self.reads, strict=True):
            if isinstance(read, int):
                graph_inputs[name] = _batch_array(self.graph, value, batch[read])
            else:
                graph_inputs[name] = read.current()
        with np.errstate(all="ignore"):
            values = self.program.function(*self.graph.keys_now(), **graph_inputs)
        return all(g.holds(v) for g, v in zip(self.guards, values, strict=True))


def expression_text(graph: Graph, value: Value, width: int = 160) -> str:
    """`value` as a nested expression of its inputs, as many levels deep as fit in `width`
    characters (at least one; deeper values by their labels, as the IR lists them)."""
    producers = graph.producers()

    def text(x: Any, level: int) -> str:
        node = producers.get(x) if isinstance(x, Value) else None
        if node is None or level == 0:
            return operand_label(x)
        return call_text(node, lambda a: text(a, level - 1))

    shown = text(value, 1)
    for depth in range(2, 8):
        deeper = text(value, depth)
        if len(deeper) > width or deeper == shown:
            break
        shown = deeper
    return shown


def guard_lines(graph: Graph) -> list[str]:
    """One line per guard of a traced graph: what is read, from which expression, and the
    outcome the graph is specialised on."""
    return [
        f"guard {i}: {g.read}({expression_text(graph, g.value)}) == {g.expected!r}"
        for i, g in enumerate(graph.guards, 1)
    ]
