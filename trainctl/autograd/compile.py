"""IR -> one straight-line Python function over `xp`, compiled once and replayed every step.

With the memory plan, every value lives in a preallocated array and every node calls its
op's own forward with `out=` (a ufunc directly, where the op is one): the module-level
prologue builds the buffers and all views of them once, and the step function is nothing
but those calls. Without the plan (a debugging switch) each node calls its op's forward and
allocates, which is eager mode minus the tape. The generated source is kept on the Program
(`trainctl graph --format code` prints it).

On CuPy, fused elementwise chains become one `cupy.ElementwiseKernel` each, rendered from the
members' expressions and compiled without FMA contraction, so they round as the separate
kernels of eager mode do.

`device_scalars=True` (for CUDA graphs) keeps the per-step host numbers (learning rate, bias
corrections) in a small device array instead of passing them as Python numbers, so the device
code reads them at run time and can be captured once and replayed: `host_values` computes them
on the host, `device_step` is the capturable part, and `step` runs the two. A host number meets
an array as the weakly typed Python float it is in eager mode: it is rounded to the array's
dtype on the device first (the same IEEE rounding NumPy does on the host), so the results are
bit for bit those of the plain program.

`check_numerics=True` (`debug.check_numerics`) adds a line after each node's: if its output
holds NaN or Inf, the step stops with a NonFiniteError naming the node, its line of IR and
where it came from (the layer, or which gradient). Programs compiled without it are unchanged.
"""

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
from trainctl.autograd.kernels import check_labels as check_labels  # for train/step.py
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
    if plan_memory:
        codegen.planned()
    else:
        codegen.naive()
    return codegen.finish()


# ---------------------------------------------------------------- code generation


def _tuple(parts: list[str]) -> str:
    return f"({parts[0]},)" if len(parts) == 1 else f"({', '.join(parts)})"


def _identifier(name: str) -> str:
    return "s_" + re.sub(r"\W", "_", name)


class _Codegen:
    def __init__(
        self, graph: Graph, state: Mapping[str, Any], check_numerics: bool, device_scalars: bool
    ) -> None:
        self.graph = graph
        self.checked: list[Node] | None = [] if check_numerics else None
        self.xp = graph.device.xp
        self.cuda = self.xp is not np
        self.ns: dict[str, Any] = {"xp": self.xp, "backend": backend, "ops": ops}
        self.prologue: list[str] = []
        self.defined: set[str] = set()
        self.views: dict[str, str] = {}
        self.body: list[str] = []
        self.names: dict[Any, str] = {}
        self.counter = 0
        self.plan: Plan | None = None
        for s in graph.scalars:
            self.names[s] = _identifier(s.name)
        self.params = [self.names[s] for s in graph.scalars]
        for index in range(len(graph.generators)):
            self.params += [f"seed{index}", f"counter{index}"]
        for index, slot in enumerate(graph.state):
            name = self.names[slot.value] = f"state{index}"
            self.ns[name] = state[slot.name]
        self.input_names = []
        for index, v in enumerate(graph.inputs):
            name = self.names[v] = f"input{index}"
            self.input_names.append(name)
            self.define(name, f"xp.empty({v.shape!r}, {self.dtype(v.dtype)})")
        for c in used_constants(graph):
            self.names[c] = self.bind("const", c.array)
        self.device_scalars = device_scalars
        self.current: Node | None = None  # the node being emitted
        self.host_body: list[str] = []
        self.scalar_slots: dict[HostScalar, int] = {}
        self.scalar_arrays: dict[str, str] = {}  # dtype name -> array of every host number
        self.label_checks: list[tuple[int, int]] = []
        if device_scalars:
            count = len(graph.scalars) + sum(isinstance(n.out, HostScalar) for n in graph.nodes)
            self.scalar_count = max(count, 1)
            self.scalar_arrays["float64"] = self.define(
                "scalars", f"xp.zeros({self.scalar_count}, xp.float64)"
            )
            self.scalar_slots.update({s: i for i, s in enumerate(graph.scalars)})

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

    def line(self, text: str) -> None:
        self.body.append(text)

    def arg(self, x: Any, dtype: np.dtype | None = None) -> str:
        """How the code names `x`; a host number kept on the device is a 0-d array of `dtype`
        (default: the dtype of the current node's first array input, which is what a weak
        Python number becomes beside it)."""
        if isinstance(x, HostScalar) and self.device_scalars:
            return self.device_scalar(x, dtype or self._operand_dtype())
        if isinstance(x, (Value, HostScalar)):
            return self.names[x]
        return literal(x)

    def _operand_dtype(self) -> np.dtype:
        inputs = self.current.inputs if self.current is not None else ()
        arrays = [x for x in inputs if isinstance(x, Value) and x.dtype.kind == "f"]
        return arrays[0].dtype if arrays else np.dtype(np.float64)

    def device_scalar(self, x: HostScalar, dtype: np.dtype) -> str:
        """A 0-d view of host number `x` in the device array of `dtype` (filled from the
        float64 array at the start of every step)."""
        name = self.scalar_arrays.get(dtype.name)
        if name is None:
            expression = f"xp.zeros({self.scalar_count}, {self.dtype(dtype)})"
            name = self.scalar_arrays[dtype.name] = self.define(f"scalars_{dtype.name}", expression)
        slot = self.scalar_slots[x]
        return self.view(f"{name}[{slot}:{slot + 1}].reshape(())")

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
        if (
            self.checked is None
            or not isinstance(out, Value)
            or out.dtype.kind != "f"
            or node.op.kind == "view"
        ):
            return
        if not self.checked:
            self.ns["nonfinite"] = self._nonfinite
        self.line(f"if not xp.isfinite({self.names[out]}).all():")
        self.line(f"    nonfinite({len(self.checked)}, {self.names[out]})")
        self.checked.append(node)

    def _nonfinite(self, index: int, array: Any) -> None:
        node = self.checked[index]
        origin = (self.graph.origins or {}).get(node.out, "")
        where = f", in {origin}" if origin else ""
        raise NonFiniteError(
            f"non-finite values ({describe_nonfinite(array)}) in the output of {node.op.name}, "
            f"{array_text(array)}{where} (graph node {node_text(node).splitlines()[0]})"
        )

    def host(self, node: Node) -> None:
        name = self.names[node.out] = self.fresh("host")
        args = [self.names[x] if isinstance(x, HostScalar) else literal(x) for x in node.inputs]
        symbol = node.op.symbol
        text = (
            f"{name} = {symbol}{args[0]}"
            if len(args) == 1
            else f"{name} = {args[0]} {symbol} {args[1]}"
        )
        if self.device_scalars:
            self.scalar_slots[node.out] = len(self.scalar_slots)
            self.host_body.append(text)
        else:
            self.line(text)

    # ------------------------------------------------------------ naive: forward calls

    def naive(self) -> None:
        for node in self.graph.nodes:
            if isinstance(node.out, HostScalar):
                self.host(node)
                continue
            for member in body_of(node):  # a fused chain or loop: each member's forward
                self.names[member.out] = self.fresh("t")
                self.line(f"{self.names[member.out]} = {self.call(member)}")
                self.check(member)
        for slot, value in self.graph.state_outputs():
            if value is not slot.value:
                self.line(f"xp.copyto({self.names[slot.value]}, {self.arg(value)})")

    # ------------------------------------------------------------ planned: out= buffers

    def planned(self) -> None:
        graph = self.graph
        plan = self.plan = plan_buffers(graph, self.xp)
        storage_names = {}
        for storage in plan.storages:
            make = {"pool": "empty", "private": "zeros"}.get(storage.kind)
            if make is not None:
                shape = storage.size if storage.kind == "pool" else storage.shape
                name = self.define(
                    f"buffer{storage.index}", f"xp.{make}({shape!r}, {self.dtype(storage.dtype)})"
                )
                storage_names[storage] = name
        fixed = graph.inputs + [slot.value for slot in graph.state] + used_constants(graph)
        for value in fixed:
            storage_names[plan.storage_of[value]] = self.names[value]
        for node in graph.nodes:
            out = node.out
            if isinstance(out, HostScalar):
                self.host(node)
                continue
            self.current = node
            if node in plan.views:
                self.names[out] = self.view(self.call(node))
                continue
            storage, recipe = plan.home[out]
            if isinstance(recipe, int):  # a part of a concatenation, in its slice
                target = self.view(
                    f"{storage_names[storage]}[{recipe}:{recipe + out.size}]"
                    + ("" if len(out.shape) == 1 else f".reshape({out.shape!r})")
                )
                self.names[out] = target
            elif recipe is node:  # a value inside the storage its op writes
                shape = storage_spec(node).shape
                target = self.view(f"{storage_names[storage]}.reshape({shape!r})")
                attrs = "".join(f", {k}={self.attr(v)}" for k, v in node.attrs.items())
                self.names[out] = self.view(f"{self.bound(node.op)}.value_of({target}{attrs})")
            else:
                target = self._value_in(out, storage, storage_names)
            scratch = [
                self.view(f"{storage_names[s]}.reshape({shape!r})")
                for s, shape in plan.scratch.get(node, [])
            ]
            if node.op is FUSED:
                self._fused(node, target, scratch)
            elif node.op is LOOP:
                self._loop(node, target)
            else:
                self.line(self.call(node, target, **self._extra(node, scratch)))
            if node.op is not FUSED or self.cuda:  # NumPy's fused members check themselves
                self.check(node)
        for slot_name, value in plan.copies:
            slot = next(s for s in graph.state if s.name == slot_name)
            self.line(f"xp.copyto({self.names[slot.value]}, {self.arg(value)})")

    def _extra(self, node: Node, scratch: list[str]) -> dict[str, str]:
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

    def _value_in(self, value: Value, storage: Any, storage_names: dict) -> str:
        base = storage_names[storage]
        if tuple(self.ns[base].shape) == value.shape:
            self.names[value] = base
        else:
            self.names[value] = self.view(f"{base}.reshape({value.shape!r})")
        return self.names[value]

    def _fused(self, node: Node, out: str, scratch: list[str]) -> None:
        if self.cuda:
            self._fused_kernel(node, out)
            return
        target, _, _ = fused_layout(node, self.xp, self.plan.alias.get(node))
        for member in node.attrs["body"]:
            place, own = target[member]
            place = out if place == "out" else scratch[place]
            self.names[member.out] = place
            self.current = member
            self.line(self.call(member, place, **self._extra(member, [scratch[i] for i in own])))
            self.check(member)
        self.names[node.out] = out

    def _fused_kernel(self, node: Node, out: str) -> None:
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
        self.line(f"{self.bind('kernel', kernel)}({', '.join(args)}, {out})")

    def _loop(self, node: Node, out: str) -> None:
        if self.device_scalars and any(isinstance(x, HostScalar) for x in node.inputs):
            raise ValueError("device scalars are for CuPy: the jit pass's loops take host numbers")
        args = [self.arg(x) for x in node.inputs]
        params, samples = [out], [self.ns[out]]  # each array once: the output, then the others
        for x, name in zip(node.inputs, args, strict=True):
            if name not in params:
                params.append(name)
                samples.append(self.ns[name] if isinstance(x, Value) else 0.0)
        slots = [params.index(name) for name in args]
        loop = compile_loop(node, slots, samples)
        self.line(f"{self.bind(f'loop{node.out.id}_', loop)}({', '.join(params)})")

    # ------------------------------------------------------------ the result

    def finish(self) -> Program:
        header = [
            "# generated by trainctl graph mode: one training step over xp "
            f"({'CuPy' if self.cuda else 'NumPy'}), replayed every step",
        ]
        outputs = [
            name for name in self.graph.outputs if name not in {s.name for s in self.graph.state}
        ]
        returns = "".join(f"{self.arg(self.graph.outputs[name])}, " for name in outputs)
        # The batch may be passed in (input0=array) instead of copied into input0: the views
        # of the inputs are then taken again in the function, where they cost a microsecond.
        bound = [f"{name}={name}" for name in self.input_names]
        reading_inputs = [f"    {line}" for line in _lines_reading(self.prologue, self.input_names)]
        if self.device_scalars:
            functions = self._split_functions(bound, reading_inputs, returns)
        else:
            functions = [f"def step({', '.join(self.params + bound)}):", *reading_inputs]
            functions += [f"    {text}" for text in self.body]
            functions.append(f"    return ({returns.rstrip()})")
        source = "\n".join(header + self.prologue + ["", ""] + functions) + "\n"
        namespace = {k: v for k, v in self.ns.items() if k not in self.defined}
        exec(compile(source, "<trainctl graph step>", "exec"), namespace)  # noqa: S102
        plan = self.plan
        storages = plan.storages if plan else []
        pool = [s for s in storages if s.kind == "pool"]
        return Program(
            source=source,
            function=namespace["step"],
            inputs=[namespace[name] for name in self.input_names],
            input_names=self.input_names,
            output_names=outputs,
            scalar_names=[s.name for s in self.graph.scalars],
            buffers=len(pool),
            buffer_bytes=sum(s.nbytes for s in storages if s.kind in ("pool", "private")),
            host_values=namespace.get("host_values"),
            scalars=namespace.get("scalars"),
            device_step=namespace.get("device_step"),
            label_checks=self.label_checks,
        )

    def _split_functions(self, bound: list[str], reading_inputs: list[str], returns: str):
        """host_values (Python arithmetic on the host numbers), device_step (array code only,
        the host numbers read from `scalars`) and step, which runs the one, then the other."""
        by_slot = sorted(self.scalar_slots, key=self.scalar_slots.__getitem__)
        values = "".join(f"{self.names[x]}, " for x in by_slot)
        self.ns["write_scalars"] = write_scalars
        lines = [f"def host_values({', '.join(self.params)}):"]
        lines += [f"    {text}" for text in self.host_body]
        lines += [f"    return ({values.rstrip()})", "", ""]
        lines += [f"def device_step({', '.join(bound)}):", *reading_inputs]
        lines += [
            f"    xp.copyto({name}, scalars, casting='same_kind')"
            for dtype, name in self.scalar_arrays.items()
            if dtype != "float64"
        ]
        lines += [f"    {text}" for text in self.body]
        lines += [f"    return ({returns.rstrip()})", "", ""]
        lines += [f"def step({', '.join(self.params + bound)}):"]
        lines += [f"    write_scalars(scalars, host_values({', '.join(self.params)}))"]
        lines += [f"    return device_step({', '.join(bound)})"]
        return lines


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
