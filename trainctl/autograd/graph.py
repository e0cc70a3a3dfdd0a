"""Graph mode's IR, the tracer that records it, and autodiff on it.

A trace runs ordinary Module code once on symbolic `Value`s (shape, dtype, device; no data).
Every op applied to a value appends a `Node` to the `Graph` instead of running. Parameters and
buffers are swapped for named state inputs while the trace runs; buffer rebindings (BatchNorm's
running statistics) become state outputs; dropout keys become `RngKey`s relative to the
generator's counter, which the compiled step takes as a runtime input; per-step host numbers
(the learning rate) are `HostScalar`s. A value read as a Python number (`if` on it, `.item()`)
needs data: a trace given the real batch computes it and records a guard (`guards.py`), any
other trace refuses. `gradients()` derives the backward graph from the ops' vjp rules in
exactly the order eager `backward()` sums them, so both modes agree bit for bit.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainctl import backend
from trainctl.autograd import ops
from trainctl.autograd.numerics import gradient_origin
from trainctl.autograd.ops import Operand, Spec
from trainctl.autograd.tensor import Tensor, is_grad_enabled, no_grad, topological_order
from trainctl.backend import Device
from trainctl.errors import TrainctlError

EAGER_HINT = "graph mode records the step once without data; use mode: eager for this model"


class TracingError(TrainctlError):
    """Model code that needs data while graph mode traces it (`.item()`, `if` on a value...)."""


@dataclass(frozen=True)
class RngKey:
    """The key of a dropout draw: `offset` draws after generator `generator`'s counter."""

    generator: int
    offset: int

    def __repr__(self) -> str:
        return f"rng{self.generator}+{self.offset}"


def _host(op: type[ops.Op], reflected: bool = False) -> Any:
    """An operator of `HostScalar`: `op` recorded as host arithmetic (operands swapped when
    `reflected`)."""
    if reflected:
        return lambda self, other: self._record(op, other, self)
    return lambda self, other=None: self._record(op, self, other)


class HostScalar(float):
    """A per-step host number (learning rate, Adam's bias corrections) inside a trace.

    It is a float, so ops treat it as the weakly typed Python number eager mode passes; sums and
    products of host scalars are recorded and replayed as Python arithmetic, as eager mode does
    them. Its trace-time value is never used for a result: reading it is a TracingError.
    """

    def __new__(cls, value: float, graph: Graph, name: str | None = None) -> HostScalar:
        scalar = float.__new__(cls, value)
        scalar.graph, scalar.id, scalar.name = graph, next(graph.ids), name
        return scalar

    def _record(self, op: type[ops.Op], a: Any, b: Any = None) -> Any:
        operands = (a,) if b is None else (a, b)
        for x in operands:
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                return NotImplemented  # an Operand takes over through its reflected operator
        values = [float.__float__(x) if isinstance(x, HostScalar) else x for x in operands]
        with np.errstate(all="ignore"):  # a trace-time value only: never used for a result
            value = float(op.forward(np, *values))
        return self.graph.record_host(op, operands, value)

    __add__, __radd__ = _host(ops.Add), _host(ops.Add, reflected=True)
    __sub__, __rsub__ = _host(ops.Sub), _host(ops.Sub, reflected=True)
    __mul__, __rmul__ = _host(ops.Mul), _host(ops.Mul, reflected=True)
    __truediv__, __rtruediv__ = _host(ops.Div), _host(ops.Div, reflected=True)
    __pow__, __rpow__ = _host(ops.Pow), _host(ops.Pow, reflected=True)
    __neg__ = _host(ops.Neg)

    def _refuse(self, *_: Any) -> Any:
        raise TracingError(
            f"the per-step value {self.label} has no value while tracing (it changes every "
            f"step): compute with it arithmetically, or {EAGER_HINT}"
        )

    __bool__ = __float__ = __int__ = __index__ = __round__ = __trunc__ = _refuse
    __lt__ = __le__ = __gt__ = __ge__ = _refuse

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    __hash__ = object.__hash__

    @property
    def label(self) -> str:
        return f"%{self.name or self.id}"

    def __repr__(self) -> str:
        return self.label


def _reading(what: str, how: str | None = None) -> Any:
    """A method of `Value` that reads its data (see `Value._read`)."""
    return lambda self, *_, **__: self._read(what, how)


class Value(Operand):
    """A symbolic array of a graph: an input, a constant or a node's output."""

    __slots__ = ("graph", "id", "shape", "dtype", "requires_grad", "name", "array")
    _symbolic = True

    def __init__(
        self,
        graph: Graph,
        spec: Spec,
        requires_grad: bool = False,
        name: str | None = None,
        array: Any = None,
    ) -> None:
        self.graph, self.id = graph, next(graph.ids)
        self.shape = tuple(int(n) for n in spec.shape)
        self.dtype = np.dtype(spec.dtype)
        self.requires_grad, self.name, self.array = requires_grad, name, array

    @staticmethod
    def _apply(op: type[ops.Op], inputs: tuple, attrs: dict) -> Value:
        graph = next(x.graph for x in inputs if isinstance(x, Value))
        return graph.apply(op, inputs, attrs)

    @property
    def device(self) -> Device:
        return self.graph.device

    @property
    def label(self) -> str:
        return f"%{self.name or self.id}"

    def __repr__(self) -> str:
        return f"{self.label}: {self.dtype}{list(self.shape)}"

    def detach(self) -> Value:
        """The same values, with no gradient flowing back (an identity view under no_grad)."""
        with no_grad():
            return ops.getitem(self, (Ellipsis,))

    def _read(self, what: str, how: str | None = None) -> Any:
        """A read of the data. When the trace has the real batch (`guards.py`), a read as a
        Python number (`how`) is computed and guarded; anything else stops the trace."""
        if how is not None and self.graph.recorder is not None:
            return self.graph.recorder.read(self, how)
        made_by = next((n for n in reversed(self.graph.nodes) if n.out is self), None)
        origin = f" = {call_text(made_by)}" if made_by is not None else ""
        raise TracingError(
            f"{what} on the traced value {self.label}{origin} (shape {self.shape}, {self.dtype}) "
            f"needs its data, which tracing does not have: {EAGER_HINT}"
        )

    item = _reading(".item()", "item")
    __bool__ = _reading("a Python `if`/`while`/bool() (data-dependent control flow)", "bool")
    __float__, __int__ = _reading("float()", "float"), _reading("int()", "int")
    numpy, tolist = _reading(".numpy()"), _reading(".tolist()")
    __index__, __array__ = _reading("use as an index"), _reading("conversion to a NumPy array")
    data = property(_reading(".data"))

    def __len__(self) -> int:
        return self.shape[0]


@dataclass(eq=False)
class Node:
    """out = op(*inputs, **attrs); inputs are Values, HostScalars or Python literals.

    `op` is a primitive of `ops` or, after lowering, a kernel of `passes`; both have a `name`.
    """

    op: Any
    inputs: tuple
    attrs: dict
    out: Value | HostScalar

    def with_inputs(self, inputs: tuple) -> Node:
        return self if inputs == self.inputs else Node(self.op, inputs, self.attrs, self.out)


def infer_spec(op: Any, inputs: Sequence[Any], attrs: dict) -> Spec:
    """`op`'s output spec; a host scalar is shape-checked as the Python float it is at replay."""
    return op.infer(*(0.0 if isinstance(x, HostScalar) else x for x in inputs), **attrs)


@dataclass(eq=False)
class StateSlot:
    """A named state input (parameter, buffer, optimizer state) and where it lives outside.

    A source with a `describe()` (a storage layout, `storage.FlatState`) is shown by the IR.
    """

    name: str
    value: Value
    source: Any

    def current(self) -> Any:
        """The array a parameter or buffer slot stands for, where its owner holds it now."""
        if self.name.startswith("param:"):
            return self.source.data
        module, key = self.source[0]  # a buffer, by the places the module keeps it
        return module.__dict__[key].data


@dataclass(eq=False)
class Graph:
    """The IR of one step: inputs, constants, nodes in execution order, named outputs.

    `outputs` maps "loss"/"output" and the names of state slots that the step updates to the
    values holding their new contents. `generators` lists each generator the step draws
    from with the number of keys it takes per step. `origins`, when a tracer sets it to a
    dict, maps each recorded value to `origin` as it was then (the layer being traced, or
    which gradient), so that `debug.check_numerics` can say where a bad value came from.
    """

    device: Device
    inputs: list[Value] = field(default_factory=list)
    scalars: list[HostScalar] = field(default_factory=list)
    state: list[StateSlot] = field(default_factory=list)
    constants: list[Value] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    generators: list[tuple[backend.Generator, int]] = field(default_factory=list)
    ids: Iterator[int] = field(default_factory=itertools.count, repr=False)
    origins: dict[Any, str] | None = field(default=None, repr=False)
    origin: str = ""
    # Values read as Python numbers while tracing with data (`guards.py`): the graph holds
    # for a batch only when each read gives the outcome recorded; `recorder` reads them.
    guards: list[Any] = field(default_factory=list)
    recorder: Any = field(default=None, repr=False)

    def with_nodes(self, nodes: list[Node], outputs: dict[str, Any] | None = None) -> Graph:
        """A copy of this graph with other nodes (what every pass returns)."""
        copy = Graph(**{name: getattr(self, name) for name in self.__dataclass_fields__})
        copy.nodes, copy.outputs = nodes, dict(self.outputs if outputs is None else outputs)
        return copy

    # ------------------------------------------------------------ building

    def add_input(self, name: str, spec: Spec, requires_grad: bool = False) -> Value:
        value = Value(self, spec, requires_grad, name)
        self.inputs.append(value)
        return value

    def add_state(self, name: str, spec: Spec, source: Any, requires_grad: bool = False) -> Value:
        value = Value(self, spec, requires_grad, name)
        self.state.append(StateSlot(name, value, source))
        return value

    def add_scalar(self, name: str, value: float) -> HostScalar:
        scalar = HostScalar(value, self, name)
        self.scalars.append(scalar)
        return scalar

    def constant(self, data: Any) -> Value:
        array = self.device.asarray(data)
        value = Value(self, Spec(array.shape, array.dtype), array=array)
        self.constants.append(value)
        return value

    def record_host(self, op: type[ops.Op], operands: tuple, trace_value: float) -> HostScalar:
        out = HostScalar(trace_value, self)
        self.nodes.append(Node(op, tuple(self._operand(x) for x in operands), {}, out))
        return out

    def apply(self, op: type[ops.Op], inputs: tuple, attrs: dict) -> Value:
        """Record `op`: its output spec comes from the op's shape rule, nothing runs."""
        operands = tuple(self._operand(x) for x in inputs)
        for name, attr in attrs.items():
            if isinstance(attr, (HostScalar, Value)):
                raise TracingError(
                    f"{op.name}: argument {name} must be a constant, got the traced {attr!r}"
                )
        spec = infer_spec(op, operands, attrs)
        requires_grad = (
            is_grad_enabled()
            and op.differentiable
            and any(isinstance(x, Value) and x.requires_grad for x in operands)
        )
        out = Value(self, spec, requires_grad)
        self.nodes.append(Node(op, operands, dict(attrs), out))
        if self.origins is not None:
            self.origins[out] = self.origin
        return out

    def _operand(self, x: Any) -> Any:
        if isinstance(x, (Value, HostScalar)):
            if x.graph is not self:
                raise TracingError(f"{x!r} belongs to another trace")
            return x
        if isinstance(x, (bool, int, float)):
            return x
        if isinstance(x, Tensor):
            return _active_tracer().value_of(x)
        if isinstance(x, (np.ndarray, np.generic)):
            return self.constant(x)
        raise TracingError(f"cannot trace an operand of type {type(x).__name__}")

    # ------------------------------------------------------------ reading

    def producers(self) -> dict[Any, Node]:
        return {node.out: node for node in self.nodes}

    def state_outputs(self) -> list[tuple[StateSlot, Any]]:
        return [(slot, self.outputs[slot.name]) for slot in self.state if slot.name in self.outputs]

    def keys_now(self) -> list[int]:
        """The step's runtime random keys: each generator's seed and counter as they are now."""
        return [n for generator, _ in self.generators for n in (generator.seed, generator.counter)]


# ---------------------------------------------------------------- tracing


class Tracer:
    """Swaps a model's parameters and buffers for state inputs while a step is traced."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.values: dict[int, Value] = {}  # id(tensor) -> its state input or constant
        self.originals: dict[Value, Tensor] = {}  # state input -> the tensor it stands for
        self._buffers: list[tuple[list[tuple[Any, str]], Value]] = []  # (places, state input)
        self._swapped: list[tuple[Any, str, Any]] = []
        self._generators: dict[int, tuple[backend.Generator, int]] = {}

    def value_of(self, tensor: Tensor) -> Value:
        """The graph value standing for `tensor`: its state input, or a captured constant."""
        value = self.values.get(id(tensor))
        if value is None:
            value = self.values[id(tensor)] = self.graph.constant(tensor.data)
        return value

    def add_parameter(self, name: str, tensor: Tensor) -> Value:
        return self._add_state(f"param:{name}", tensor, tensor, True)

    def _add_state(self, name: str, tensor: Tensor, source: Any, grad: bool = False) -> Value:
        if id(tensor) not in self.values:
            spec = Spec(tensor.shape, tensor.dtype)
            value = self.values[id(tensor)] = self.graph.add_state(name, spec, source, grad)
            self.originals[value] = tensor
        return self.values[id(tensor)]

    def _swap_model(self, model: Any) -> None:
        places: dict[int, list[tuple[Any, str]]] = {}
        tensors: dict[int, tuple[str, Tensor, bool]] = {}
        for prefix, module in model.named_modules():
            for registry, is_param in ((module._parameters, True), (module._buffers, False)):
                for key, t in registry.items():
                    if t is None:
                        continue
                    places.setdefault(id(t), []).append((module, key))
                    tensors.setdefault(id(t), (f"{prefix}.{key}" if prefix else key, t, is_param))
        for tid, (name, t, is_param) in tensors.items():
            if is_param:
                value = self.add_parameter(name, t)
            else:
                value = self._add_state(f"buffer:{name}", t, places[tid])
                self._buffers.append((places[tid], value))
            for module, key in places[tid]:
                self._swapped.append((module, key, t))
                object.__setattr__(module, key, value)
                if not is_param:
                    module._buffers[key] = value

    def _restore_model(self) -> None:
        for places, value in self._buffers:
            module, key = places[0]
            new = module.__dict__[key]
            if new is not value:
                self.graph.outputs[value.name] = (
                    new if isinstance(new, Value) else self.value_of(new)
                )
        for module, key, t in reversed(self._swapped):
            object.__setattr__(module, key, t)
            if key in module._buffers:
                module._buffers[key] = t

    def _key(self, generator: backend.Generator, key: tuple[int, int]) -> RngKey:
        if id(generator) not in self._generators:
            self._generators[id(generator)] = (generator, key[1])
        index = list(self._generators).index(id(generator))
        return RngKey(index, key[1] - self._generators[id(generator)][1])

    def key_now(self, key: RngKey) -> tuple[int, int]:
        """The concrete key that symbolic `key` stands for in the step being traced."""
        generator, start = list(self._generators.values())[key.generator]
        return (generator.seed, start + key.offset)

    def _restore_generators(self) -> None:
        for generator, start in self._generators.values():
            self.graph.generators.append((generator, generator.counter - start))
            generator.counter = start


_tracers: list[Tracer] = []


def _active_tracer() -> Tracer:
    if not _tracers:
        raise TracingError("an eager tensor met a traced value outside of a trace")
    return _tracers[-1]


@contextlib.contextmanager
def tracing(device: Device, model: Any = None) -> Iterator[Tracer]:
    """Record a step: the model's parameters and buffers read as state inputs, dropout keys as
    symbolic keys. On exit the model, its buffers and the generators are as they were, and
    rebound buffers are outputs of the graph."""
    tracer = Tracer(Graph(device))
    _tracers.append(tracer)
    try:
        if model is not None:
            tracer._swap_model(model)
        with backend.intercept_keys(tracer._key):
            yield tracer
    finally:
        _tracers.pop()
        tracer._restore_model()
        tracer._restore_generators()


# ---------------------------------------------------------------- autodiff


def gradients(loss: Value, wrt: Sequence[Value]) -> list[Value | None]:
    """d(loss)/d(w) for each w (None where no path leads to w), added to loss's graph.

    This is eager `backward()` run on symbolic values: the same topological order, the same vjp
    thunks, the same order of sums, so the two modes round alike.
    """
    graph = loss.graph
    if loss.size != 1:
        raise TracingError(f"the loss must be a single value, got shape {loss.shape}")
    if not loss.requires_grad:
        raise TracingError("the loss does not depend on any parameter: nothing to differentiate")
    ctx = {n.out: n for n in graph.nodes if isinstance(n.out, Value) and n.out.requires_grad}

    def taped(value: Value) -> list[Value]:
        return [x for x in ctx[value].inputs if isinstance(x, Value) and x in ctx]

    grads: dict[Value, Value] = {loss: graph.constant(graph.device.xp.ones(loss.shape, loss.dtype))}
    leaves: dict[Value, Value] = {}
    origins, outer = graph.origins, graph.origin
    with no_grad():
        for out in reversed(topological_order(loss, taped)):
            g = grads.pop(out, None)
            if g is None:
                continue
            node = ctx[out]
            if origins is not None:
                graph.origin = gradient_origin(node.op.name, origins.get(out, ""))
            thunks = node.op.vjp(g, out, *node.inputs, **node.attrs)
            for x, thunk in zip(node.inputs, thunks, strict=False):
                if thunk is None or not isinstance(x, Value) or not x.requires_grad:
                    continue
                gx = thunk()
                if tuple(gx.shape) != x.shape:
                    raise TracingError(
                        f"vjp of {node.op.name} gave gradient {gx.shape} for input {x.shape}"
                    )
                target = grads if x in ctx else leaves
                target[x] = target[x] + gx if x in target else gx
    graph.origin = outer
    return [leaves.get(w) for w in wrt]


# ---------------------------------------------------------------- printing


def operand_label(x: Any) -> str:
    if isinstance(x, (Value, HostScalar)):
        return x.label
    return repr(x)


def _attr_text(attrs: dict) -> str:
    return ", ".join(f"{k}={v.name if isinstance(v, np.dtype) else v!r}" for k, v in attrs.items())


def call_text(node: Node, arg_text: Callable[[Any], str] = operand_label) -> str:
    """`op(inputs, attributes)`, each input as `arg_text` writes it."""
    args = [arg_text(x) for x in node.inputs]
    attrs = {k: v for k, v in node.attrs.items() if k != "body"}
    if attrs:
        args.append(_attr_text(attrs))
    return f"{node.op.name}({', '.join(args)})"


def node_text(node: Node) -> str:
    """One line of the IR: output, op, inputs and attributes, shape and dtype; the members of a
    fused node follow on indented lines."""
    out = node.out
    kind = "host" if isinstance(out, HostScalar) else f"{out.dtype}{list(out.shape)}"
    lines = [f"{out.label} = {call_text(node)}  : {kind}"]
    lines += [f"    | {node_text(member)}" for member in node.attrs.get("body", ())]
    return "\n".join(lines)
