"""IR -> one straight-line Python function over `xp`, compiled once and replayed every step.

With the memory plan every value lives in a preallocated array and every node calls its op's
forward (or its ufunc) with `out=`: the module-level prologue builds the buffers and all views
of them once, so the step is nothing but those calls. Without the plan (a debugging switch)
each node's forward allocates: eager mode minus the tape. On CuPy each fused chain is one
`ElementwiseKernel`, rendered from the members' expressions without FMA contraction so it
rounds as eager mode's separate kernels do.

`device_scalars=True` (for CUDA graphs) keeps the per-step host numbers in a small device
array, so the device code can be captured once: `host_values` computes them, `device_step`
is the capturable part. A host number meets an array as the weak Python float it is in eager
mode, rounded to the array's dtype first, so results are bit for bit the plain program's.
`check_numerics=True` stops the step with a NonFiniteError at the first node whose output
holds NaN or Inf, naming it and where it came from."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainctl import backend
from trainctl.autograd import ops
from trainctl.autograd.expressions import CTYPES, C, literal, member_expression
from trainctl.autograd.graph import Graph, HostScalar, Node, RngKey, Value, node_text
from trainctl.autograd.kernels import FUSED, LOOP, body_of, fused_layout
from trainctl.autograd.kernels import check_labels as check_labels  # for jit.py
from trainctl.autograd.loops import compile_loop
from trainctl.autograd.numerics import NonFiniteError, array_text, describe_nonfinite
from trainctl.autograd.planner import Plan, plan_buffers, storage_spec, used_constants


@dataclass
class Program:
    """A compiled step: call `function(*scalars, *seed_and_counter_per_generator)` after filling
    `inputs`, or pass arrays shaped and typed as they are by keyword (`input0=batch`, C-ordered)
    to use them in place; it returns the graph's outputs named in `output_names` (the loss, or
    the model's output) and has updated the state arrays in place."""

    source: str
    function: Callable[..., tuple]
    inputs: list[Any]
    input_names: list[str]
    output_names: list[str]
    scalar_names: list[str]
    buffers: int
    buffer_bytes: int
    # With device scalars only: the host half, the capturable device half, and which inputs
    # hold class labels (input index, number of classes) to range-check on the host.
    host_values: Callable[..., tuple] | None = None
    scalars: Any = None  # the float64 array of host numbers the device code reads
    device_step: Callable[..., tuple] | None = None
    label_checks: list[tuple[int, int]] = field(default_factory=list)


def compile_graph(
    graph: Graph,
    state: Mapping[str, Any],
    plan_memory: bool = True,
    check_numerics: bool = False,
    device_scalars: bool = False,
) -> Program:
    """Compile `graph` against the arrays in `state` (slot name -> array, updated in place)."""
    if device_scalars and (not plan_memory or check_numerics or graph.generators):
        raise ValueError("device scalars need the memory plan, no numerics checks, no RNG")
    codegen = _Codegen(graph, state, check_numerics, device_scalars)
    codegen.emit(plan_buffers(graph, codegen.xp) if plan_memory else None)
    return codegen.finish()


def _tuple(parts: list[str]) -> str:
    return f"({parts[0]},)" if len(parts) == 1 else f"({', '.join(parts)})"


def _function(name: str, params: list[str], body: list[str]) -> list[str]:
    return [f"def {name}({', '.join(params)}):", *(f"    {line}" for line in body)]


class _Codegen:
    def __init__(
        self, graph: Graph, state: Mapping[str, Any], check_numerics: bool, device_scalars: bool
    ) -> None:
        self.graph, self.xp = graph, graph.device.xp
        self.cuda = self.xp is not np
        self.device_scalars = device_scalars
        self.checked: list[Node] | None = [] if check_numerics else None
        self.ns: dict[str, Any] = {"xp": self.xp, "backend": backend, "ops": ops}
        self.prologue: list[str] = []
        self.defined: set[str] = set()
        self.views: dict[str, str] = {}
        self.body: list[str] = []
        self.host_body: list[str] = []  # with device scalars: the host numbers' arithmetic
        self.counter = 0
        self.plan: Plan | None = None
        self.current: Node | None = None  # the node being emitted
        self.label_checks: list[tuple[int, int]] = []
        self.names: dict[Any, str] = {s: "s_" + re.sub(r"\W", "_", s.name) for s in graph.scalars}
        self.params = [self.names[s] for s in graph.scalars]
        for index in range(len(graph.generators)):
            self.params += [f"seed{index}", f"counter{index}"]
        for index, slot in enumerate(graph.state):
            name = self.names[slot.value] = f"state{index}"
            self.ns[name] = state[slot.name]
        self.input_names = [f"input{index}" for index in range(len(graph.inputs))]
        for name, v in zip(self.input_names, graph.inputs, strict=True):
            self.names[v] = self.define(name, f"xp.empty({v.shape!r}, {self.dtype(v.dtype)})")
        for c in used_constants(graph):
            self.names[c] = self.bind("const", c.array)
        # With device scalars, host number -> its slot in `scalars` (float64) and in the copy
        # of that array in each dtype a host number meets an array in.
        self.scalar_slots: dict[HostScalar, int] = {s: i for i, s in enumerate(graph.scalars)}
        self.scalar_arrays: dict[str, str] = {}
        if device_scalars:
            count = len(graph.scalars) + sum(isinstance(n.out, HostScalar) for n in graph.nodes)
            self.scalar_count = max(count, 1)
            self.scalar_arrays["float64"] = self.define(
                "scalars", f"xp.zeros({self.scalar_count}, xp.float64)"
            )

    # ------------------------------------------------------------ helpers

    def dtype(self, dtype: np.dtype) -> str:
        """How the code names `dtype`: `xp.float32`, or a bound name for one the array module
        does not export (bfloat16 comes from ml_dtypes)."""
        if hasattr(self.xp, dtype.name):
            return f"xp.{dtype.name}"
        if dtype not in self.names:
            self.names[dtype] = self.bind(f"dtype_{dtype.name}_", dtype)
        return self.names[dtype]

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def bind(self, prefix: str, obj: Any) -> str:
        name = self.fresh(prefix)
        self.ns[name] = obj
        return name

    def define(self, name: str, expression: str) -> str:
        """A prologue line, also run now: later lines see the real arrays."""
        self.prologue.append(f"{name} = {expression}")
        self.defined.add(name)
        self.ns[name] = eval(expression, self.ns)
        return name

    def view(self, expression: str) -> str:
        """A prologue view; the same expression always gives the same name."""
        if expression not in self.views:
            self.views[expression] = self.define(self.fresh("view"), expression)
        return self.views[expression]

    def arg(self, x: Any, dtype: np.dtype | None = None) -> str:
        """How the code names `x`. With device scalars a host number is a 0-d view of it in the
        device array of `dtype` (default: the dtype of the current node's first float input,
        which is what a weak Python number becomes beside it)."""
        if isinstance(x, HostScalar) and self.device_scalars:
            if dtype is None:
                inputs = self.current.inputs if self.current is not None else ()
                floats = [v.dtype for v in inputs if isinstance(v, Value) and v.dtype.kind == "f"]
                dtype = floats[0] if floats else np.dtype(np.float64)
            name = self.scalar_arrays.get(dtype.name)
            if name is None:
                expression = f"xp.zeros({self.scalar_count}, {self.dtype(dtype)})"
                name = self.scalar_arrays[dtype.name] = self.define(
                    f"scalars_{dtype.name}", expression
                )
            slot = self.scalar_slots[x]
            return self.view(f"{name}[{slot}:{slot + 1}].reshape(())")
        if isinstance(x, (Value, HostScalar)):
            return self.names[x]
        return literal(x)

    def attr(self, value: Any) -> str:
        """An attribute as code: a literal where Python can read one back, else a bound name."""
        if isinstance(value, RngKey):
            return f"(seed{value.generator}, counter{value.generator} + {value.offset})"
        if isinstance(value, np.dtype):
            return self.dtype(value)
        if value is None or value is Ellipsis or isinstance(value, (bool, int, float, str, slice)):
            return literal(value)
        if isinstance(value, tuple):
            return _tuple([self.attr(v) for v in value])
        return self.bind("attr", value)

    def call(self, node: Node, out: str | None = None, **extra: Any) -> str:
        """The call of `node`'s op: its forward on the node's inputs and attributes, into
        `out` when given; `extra` are further keyword arguments (already code)."""
        op, args = node.op, [self.arg(x) for x in node.inputs]
        function = f"{self.bound(op)}.forward"
        capturing = self.device_scalars and self.cuda and op.capturable is not None
        capture = op.capturable(*node.inputs) if capturing else None
        if capture is not None:
            function = self.bind(f"{op.name}_captured", capture)
        elif out is not None and not extra and op.ufunc:
            return f"xp.{op.ufunc}({', '.join(args)}, out={out})"
        elif out is not None and op.reduces and not self.cuda:
            # np.sum / np.max wrap add.reduce / maximum.reduce: called directly, at half the cost
            axes, keepdims = node.attrs["axes"], node.attrs["keepdims"]
            axis = axes[0] if len(axes) == 1 else axes
            return (
                f"xp.{op.reduces}.reduce({args[0]}, axis={axis!r}, keepdims={keepdims}, out={out})"
            )
        args += [f"{key}={self.attr(value)}" for key, value in node.attrs.items()]
        if op.prepare is not None:
            prepared = op.prepare(self.xp, *node.inputs, **node.attrs)
            args += [f"{key}={self.bind(key, value)}" for key, value in prepared.items()]
        args += [f"{key}={value}" for key, value in extra.items()]
        if out is not None:
            args.append(f"out={out}")
        return f"{function}(xp, {', '.join(args)})"

    def bound(self, op: Any) -> str:
        """The op's class in the generated code's namespace, under its own name."""
        self.ns.setdefault(op.__name__, op)
        return op.__name__

    def check(self, node: Node) -> None:
        """With check_numerics: stop the step here if `node`'s output holds NaN or Inf. Views
        only move values around: the check fires where a value was made."""
        out = node.out
        if self.checked is None or out.dtype.kind != "f" or node.op.kind == "view":
            return
        if not self.checked:
            self.ns["nonfinite"] = self._nonfinite
        self.body.append(f"if not xp.isfinite({self.names[out]}).all():")
        self.body.append(f"    nonfinite({len(self.checked)}, {self.names[out]})")
        self.checked.append(node)

    def _nonfinite(self, index: int, array: Any) -> None:
        node = self.checked[index]
        origin = (self.graph.origins or {}).get(node.out, "")
        where = f", in {origin}" if origin else ""
        raise NonFiniteError(
            f"non-finite values ({describe_nonfinite(array)}) in the output of {node.op.name}, "
            f"{array_text(array)}{where} (graph node {node_text(node).splitlines()[0]})"
        )

    # ------------------------------------------------------------ the step's body

    def emit(self, plan: Plan | None) -> None:
        """Every node's line(s): into its planned home, or (no plan) each member's forward
        allocating its output; then the copies of new state values not computed in place."""
        self.plan, graph = plan, self.graph
        if plan is not None:
            self.storage_names = self.storages(plan)
        for node in graph.nodes:
            self.current = node
            if isinstance(node.out, HostScalar):
                self.host(node)
            elif plan is not None:
                self.planned(node)
            else:
                for member in body_of(node):  # a fused chain or loop: each member's forward
                    self.names[member.out] = self.fresh("t")
                    self.body.append(f"{self.names[member.out]} = {self.call(member)}")
                    self.check(member)
        copies = [(s, v) for s, v in graph.state_outputs() if v is not s.value]
        for slot, value in plan.copies if plan is not None else copies:
            self.body.append(f"xp.copyto({self.names[slot.value]}, {self.arg(value)})")

    def host(self, node: Node) -> None:
        """Python arithmetic on host numbers (the learning rate's schedule)."""
        name = self.names[node.out] = self.fresh("host")
        args = [self.names[x] if isinstance(x, HostScalar) else literal(x) for x in node.inputs]
        symbol = node.op.symbol
        text = f"{name} = " + (f"{symbol}{args[0]}" if len(args) == 1 else f" {symbol} ".join(args))
        if self.device_scalars:
            self.scalar_slots[node.out] = len(self.scalar_slots)
            self.host_body.append(text)
        else:
            self.body.append(text)

    def storages(self, plan: Plan) -> dict[Any, str]:
        """Names of the planned storages: new pool and private arrays, the fixed ones'."""
        names = {}
        for storage in plan.storages:
            if storage.kind in ("pool", "private"):
                make = "empty" if storage.kind == "pool" else "zeros"
                shape = storage.size if storage.kind == "pool" else storage.shape
                expression = f"xp.{make}({shape!r}, {self.dtype(storage.dtype)})"
                names[storage] = self.define(f"buffer{storage.index}", expression)
        graph = self.graph
        for value in graph.inputs + [s.value for s in graph.state] + used_constants(graph):
            names[plan.home[value][0]] = self.names[value]
        return names

    def planned(self, node: Node) -> None:
        out = node.out
        storage, where = self.plan.home[out]
        if storage is None:  # a view of its input
            self.names[out] = self.view(self.call(node))
            return
        base = self.storage_names[storage]
        if isinstance(where, int):  # a part of a concatenation, in its slice
            target = self.names[out] = self.view(
                f"{base}[{where}:{where + out.size}]"
                + ("" if len(out.shape) == 1 else f".reshape({out.shape!r})")
            )
        elif where is node:  # a value inside the storage its op writes
            target = self.view(f"{base}.reshape({storage_spec(node).shape!r})")
            attrs = "".join(f", {k}={self.attr(v)}" for k, v in node.attrs.items())
            self.names[out] = self.view(f"{self.bound(node.op)}.value_of({target}{attrs})")
        elif tuple(self.ns[base].shape) == out.shape:
            target = self.names[out] = base
        else:
            target = self.names[out] = self.view(f"{base}.reshape({out.shape!r})")
        scratch = [
            self.view(f"{self.storage_names[s]}.reshape({shape!r})")
            for s, shape in self.plan.scratch.get(node, [])
        ]
        if node.op is FUSED and self.cuda:
            self.fused_kernel(node, target)
        elif node.op is FUSED:  # its members in turn, each checking itself
            self.fused(node, target, scratch)
            return
        elif node.op is LOOP:
            self.loop(node, target)
        else:
            self.body.append(self.call(node, target, **self.extra(node, scratch)))
        self.check(node)

    def extra(self, node: Node, scratch: list[str]) -> dict[str, str]:
        """Keyword arguments the plan adds: scratch arrays, the parts a concatenation still
        copies, labels the host checks before a captured program (no device-host waits)."""
        extra = {"scratch": _tuple(scratch)} if scratch else {}
        if node in self.plan.concat_copies:
            extra["parts"] = repr(self.plan.concat_copies[node])
        labels_at = node.op.label_input
        if labels_at is not None and self.device_scalars:
            labels = node.inputs[labels_at]
            if labels in self.graph.inputs:
                self.label_checks.append((self.graph.inputs.index(labels), node.attrs["classes"]))
                extra["checked"] = "True"
        return extra

    def fused(self, node: Node, out: str, scratch: list[str]) -> None:
        """A fused chain on NumPy: its members' forwards, laid out by `fused_layout`."""
        target, _ = fused_layout(node, self.xp, self.plan.alias.get(node))
        for member in node.attrs["body"]:
            place, own = target[member]
            place = out if place == "out" else scratch[place]
            self.names[member.out] = place
            self.current = member
            self.body.append(
                self.call(member, place, **self.extra(member, [scratch[i] for i in own]))
            )
            self.check(member)
        self.names[node.out] = out

    def fused_kernel(self, node: Node, out: str) -> None:
        """One CuPy ElementwiseKernel for the chain, rendered from the members' expressions."""
        names: dict[Any, str] = {}
        params, args = [], []
        for index, leaf in enumerate(node.inputs):
            names[leaf] = f"in{index}"
            dtype = leaf.dtype.name if isinstance(leaf, Value) else "float64"
            params.append(f"{dtype} in{index}")
            args.append(self.arg(leaf, np.dtype(np.float64)))
        statements = []
        for member in node.attrs["body"]:
            expression = member_expression(member, names, C)
            names[member.out] = f"v{member.out.id}"
            statements.append(f"{CTYPES[member.out.dtype.name]} v{member.out.id} = {expression};")
        statements.append(f"out0 = v{node.out.id};")
        kernel = self.xp.ElementwiseKernel(
            ", ".join(params),
            f"{node.out.dtype.name} out0",
            " ".join(statements),
            f"trainctl_fused{node.out.id}",
            options=("--fmad=false",),
        )
        self.body.append(f"{self.bind('kernel', kernel)}({', '.join(args)}, {out})")

    def loop(self, node: Node, out: str) -> None:
        """A Numba loop, called with each array once: the output, then the others."""
        if self.device_scalars and any(isinstance(x, HostScalar) for x in node.inputs):
            raise ValueError("device scalars are for CuPy: the jit pass's loops take host numbers")
        args = [self.arg(x) for x in node.inputs]
        params, samples = [out], [self.ns[out]]
        for x, name in zip(node.inputs, args, strict=True):
            if name not in params:
                params.append(name)
                samples.append(self.ns[name] if isinstance(x, Value) else 0.0)
        loop = compile_loop(node, [params.index(name) for name in args], samples)
        self.body.append(f"{self.bind(f'loop{node.out.id}_', loop)}({', '.join(params)})")

    # ------------------------------------------------------------ the result

    def finish(self) -> Program:
        graph, plan = self.graph, self.plan
        outputs = [name for name in graph.outputs if name not in {s.name for s in graph.state}]
        returns = "return (" + "".join(f"{self.arg(graph.outputs[n])}, " for n in outputs)
        returns = returns.rstrip() + ")"
        # The batch may be passed in (input0=array) instead of copied into input0: the views
        # of the inputs are then taken again in the function, where they cost a microsecond.
        bound = [f"{name}={name}" for name in self.input_names]
        reading_inputs = _lines_reading(self.prologue, self.input_names)
        if self.device_scalars:
            functions = self.split_functions(bound, reading_inputs, returns)
        else:
            body = [*reading_inputs, *self.body, returns]
            functions = _function("step", self.params + bound, body)
        header = (
            "# generated by trainctl graph mode: one training step over xp "
            f"({'CuPy' if self.cuda else 'NumPy'}), replayed every step"
        )
        source = "\n".join([header, *self.prologue, "", "", *functions]) + "\n"
        namespace = {k: v for k, v in self.ns.items() if k not in self.defined}
        exec(compile(source, "<trainctl graph step>", "exec"), namespace)  # noqa: S102
        storages = plan.storages if plan else []
        return Program(
            source=source,
            function=namespace["step"],
            inputs=[namespace[name] for name in self.input_names],
            input_names=self.input_names,
            output_names=outputs,
            scalar_names=[s.name for s in graph.scalars],
            buffers=sum(s.kind == "pool" for s in storages),
            buffer_bytes=sum(s.nbytes for s in storages if s.kind in ("pool", "private")),
            host_values=namespace.get("host_values"),
            scalars=namespace.get("scalars"),
            device_step=namespace.get("device_step"),
            label_checks=self.label_checks,
        )

    def split_functions(self, bound: list[str], reading_inputs: list[str], returns: str):
        """host_values (Python arithmetic on the host numbers), device_step (array code only,
        the host numbers read from `scalars`) and step, which runs the one, then the other."""
        self.ns["write_scalars"] = write_scalars
        by_slot = sorted(self.scalar_slots, key=self.scalar_slots.__getitem__)
        values = "".join(f"{self.names[x]}, " for x in by_slot).rstrip()
        casts = [
            f"xp.copyto({name}, scalars, casting='same_kind')"
            for dtype, name in self.scalar_arrays.items()
            if dtype != "float64"
        ]
        lines = _function("host_values", self.params, [*self.host_body, f"return ({values})"])
        device = [*reading_inputs, *casts, *self.body, returns]
        lines += ["", "", *_function("device_step", bound, device), "", ""]
        return lines + _function(
            "step",
            self.params + bound,
            [
                f"write_scalars(scalars, host_values({', '.join(self.params)}))",
                f"return device_step({', '.join(bound)})",
            ],
        )


def write_scalars(scalars: Any, values: tuple) -> None:
    """Copy this step's host numbers into the device array the device code reads."""
    if isinstance(scalars, np.ndarray):
        scalars[: len(values)] = values
        return
    host = np.zeros(scalars.shape, np.float64)
    host[: len(values)] = values
    scalars.set(host)


def _lines_reading(prologue: list[str], names: list[str]) -> list[str]:
    """The prologue lines that read any of `names`, directly or through an earlier line."""
    reading, lines = set(names), []
    for line in prologue:
        name, expression = line.split(" = ", 1)
        if name not in names and reading & set(re.findall(r"\w+", expression)):
            reading.add(name)
            lines.append(line)
    return lines
