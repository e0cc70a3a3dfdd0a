"""IR -> one straight-line Python function over `xp`, compiled once and replayed every step.

With the memory plan, every value lives in a preallocated array and every kernel writes with
`out=`: the module-level prologue builds the buffers and all views of them once, and the step
function is nothing but array calls (no per-op Python objects). Without the plan (a debugging
switch) each node calls its op's `forward` and allocates, which is eager mode minus the tape.
The generated source is kept on the Program (`trainctl graph --format code` prints it).

On CuPy, fused elementwise chains become one `cupy.ElementwiseKernel` each, compiled without
FMA contraction so they round as the separate kernels of eager mode do.

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

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainctl import backend
from trainctl.autograd import ops
from trainctl.autograd.cublas import load_gemm
from trainctl.autograd.elementwise import CTYPES, C, literal, member_expression
from trainctl.autograd.graph import Graph, HostScalar, Node, RngKey, Value, node_text
from trainctl.autograd.kernels import FUSED, body_of
from trainctl.autograd.loops import compile_loop
from trainctl.autograd.numerics import (
    REARRANGING_OPS,
    NonFiniteError,
    array_text,
    describe_nonfinite,
)
from trainctl.autograd.ops import Spec
from trainctl.autograd.planner import Plan, plan_buffers, used_constants
from trainctl.errors import DataError


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
        self.alias: int | None = None
        self.private_bytes = 0
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
        """A prologue line, also run now: later lines and the emitters see the real arrays."""
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

    def key(self, key: RngKey) -> str:
        return f"(seed{key.generator}, counter{key.generator} + {key.offset})"

    def check(self, node: Node) -> None:
        """With check_numerics: stop the step here if `node`'s output holds NaN or Inf."""
        out = node.out
        if (
            self.checked is None
            or not isinstance(out, Value)
            or out.dtype.kind != "f"
            or node.op.name in REARRANGING_OPS
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
        symbol = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}
        if node.op.name == "neg":
            text = f"{name} = -{args[0]}"
        else:
            text = f"{name} = {args[0]} {symbol[node.op.name]} {args[1]}"
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
                self._forward_call(member)
                self.check(member)
        for slot, value in self.graph.state_outputs():
            if value is not slot.value:
                self.line(f"xp.copyto({self.names[slot.value]}, {self.arg(value)})")

    def _forward_call(self, node: Node) -> None:
        if node.op not in self.names:
            self.names[node.op] = self.bind(f"forward_{node.op.name}_", node.op.forward)
        function = self.names[node.op]
        keys = {k: v for k, v in node.attrs.items() if isinstance(v, RngKey)}
        attrs = {k: v for k, v in node.attrs.items() if k not in keys}
        args = [self.arg(x) for x in node.inputs]
        args += [f"{k}={self.key(v)}" for k, v in keys.items()]
        if attrs:
            args.append(f"**{self.bind('attrs', attrs)}")
        name = self.names[node.out] = self.fresh("t")
        self.line(f"{name} = {function}(xp, {', '.join(args)})")

    # ------------------------------------------------------------ planned: out= buffers

    def planned(self) -> None:
        graph = self.graph
        plan = self.plan = plan_buffers(graph, self.scratch_of, self.aliasable, _storage_spec)
        storage_names = {}
        for storage in plan.storages:
            if storage.kind == "pool":
                name = f"buffer{storage.index}"
                self.define(name, f"xp.empty({storage.size}, {self.dtype(storage.dtype)})")
                storage_names[storage] = name
        fixed = graph.inputs + [slot.value for slot in graph.state] + used_constants(graph)
        for value in fixed:
            storage_names[plan.storage_of[value]] = self.names[value]
        for node in graph.nodes:
            out = node.out
            if isinstance(out, HostScalar):
                self.host(node)
                continue
            if node in plan.views:
                self.names[out] = self.view(_view_expression(node, self.arg(node.inputs[0])))
                continue
            storage, recipe = plan.home[out]
            if isinstance(recipe, int):  # a part of a concatenation, in its slice
                target = self.view(
                    f"{storage_names[storage]}[{recipe}:{recipe + out.size}]"
                    + ("" if len(out.shape) == 1 else f".reshape({out.shape!r})")
                )
                self.names[out] = target
            elif recipe is node:  # a value that is a view of its node's storage
                target = storage_names[storage]
                flat_shape = _storage_spec(node).shape
                target = self.view(f"{target}.reshape({flat_shape!r})")
                self.names[out] = self.view(_storage_value(node, target))
            else:
                target = self._value_in(out, storage, storage_names)
            scratch = [
                self.view(f"{storage_names[s]}.reshape({shape!r})")
                for s, shape, _ in plan.scratch.get(node, [])
            ]
            self.alias = plan.alias.get(node)
            self.current = node
            emitter = EMITTERS.get(node.op.name, _emit_generic)
            emitter(self, node, target, scratch)
            if node.op is not FUSED or self.cuda:  # NumPy's fused members check themselves
                self.check(node)
        for slot_name, value in plan.copies:
            slot = next(s for s in graph.state if s.name == slot_name)
            self.line(f"xp.copyto({self.names[slot.value]}, {self.arg(value)})")

    def _value_in(self, value: Value, storage: Any, storage_names: dict) -> str:
        base = storage_names[storage]
        if tuple(self.ns[base].shape) == value.shape:
            self.names[value] = base
        else:
            self.names[value] = self.view(f"{base}.reshape({value.shape!r})")
        return self.names[value]

    def scratch_of(self, node: Node, alias: int | None) -> list[Spec]:
        rule = SCRATCH.get(node.op.name)
        if node.op is FUSED:
            return [] if self.cuda else _fused_layout(node, alias)[1]
        return rule(node) if rule else []

    def aliasable(self, node: Node) -> set[int]:
        name = node.op.name
        if node.op is FUSED:
            if self.cuda:
                return set(range(len(node.inputs)))
            return _fused_layout(node, None)[2] | _fused_layout(node, -1)[2]
        if name in UFUNCS or name in ("relu", "pow", "cast", "select", "loop"):
            return set(range(len(node.inputs)))
        return {"where": {2}, "sub_at": {0}}.get(name, set())

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
        pool = [s for s in plan.storages if s.kind == "pool"] if plan else []
        return Program(
            source=source,
            function=namespace["step"],
            inputs=[namespace[name] for name in self.input_names],
            input_names=self.input_names,
            output_names=outputs,
            scalar_names=[s.name for s in self.graph.scalars],
            buffers=len(pool),
            buffer_bytes=sum(s.nbytes for s in pool) + self.private_bytes,
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


def _view_expression(node: Node, source: str) -> str:
    attrs = node.attrs
    name = node.op.name
    if name == "reshape":
        return f"{source}.reshape({attrs['shape']!r})"
    if name == "transpose":
        return f"{source}.transpose({attrs['axes']!r})"
    if name == "broadcast_to":
        return f"xp.broadcast_to({source}, {attrs['shape']!r})"
    return f"{source}[{_index_text(attrs['index'])}]"


def _index_text(index: tuple) -> str:
    parts = []
    for part in index:
        if isinstance(part, slice):
            bounds = ["" if v is None else str(v) for v in (part.start, part.stop, part.step)]
            parts.append(":".join(bounds if part.step is not None else bounds[:2]))
        elif part is Ellipsis:
            parts.append("...")
        else:
            parts.append(repr(part))
    return ", ".join(parts) + ("," if len(parts) == 1 else "")


def _storage_spec(node: Node) -> Spec:
    """The storage a node writes: its output, except col2im's padded image."""
    if node.op.name == "col2im" and node.attrs["padding"]:
        n, h, w, c = node.attrs["x_shape"]
        pad = node.attrs["padding"]
        return Spec((n, h + 2 * pad, w + 2 * pad, c), node.out.dtype)
    return Spec(node.out.shape, node.out.dtype)


def _storage_value(node: Node, storage: str) -> str:
    n, h, w, c = node.attrs["x_shape"]
    pad = node.attrs["padding"]
    return f"{storage}[:, {pad}:{pad + h}, {pad}:{pad + w}, :]"


# ---------------------------------------------------------------- emitters

UFUNCS = {
    "add": "add",
    "sub": "subtract",
    "mul": "multiply",
    "div": "divide",
    "maximum": "maximum",
    "greater": "greater",
    "greater_equal": "greater_equal",
    "equal": "equal",
    "neg": "negative",
    "exp": "exp",
    "log": "log",
    "sqrt": "sqrt",
    "tanh": "tanh",
    "abs": "absolute",
}


def _emit_ufunc(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    args = ", ".join(g.arg(x) for x in node.inputs)
    g.line(f"xp.{UFUNCS[node.op.name]}({args}, out={out})")


def _emit_relu(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    g.line(f"xp.maximum({g.arg(node.inputs[0])}, 0, out={out})")


def _emit_pow(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    g.line(f"xp.power({g.arg(node.inputs[0])}, {literal(node.attrs['exponent'])}, out={out})")


def _emit_cast(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    g.line(f"xp.copyto({out}, {g.arg(node.inputs[0])}, casting='unsafe')")


def _emit_where(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    cond, a, b = (g.arg(x) for x in node.inputs)
    if b != out:
        g.line(f"xp.copyto({out}, {b})")
    g.line(f"xp.copyto({out}, {a}, where={cond})")


def _emit_select(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    # where(compare(x, y), a, 0): a mask of all ones or zeros, and'ed with a's bits
    x, y, a = (g.arg(v) for v in node.inputs)
    (mask,) = scratch
    bits = f"xp.{_mask_dtype(node).name}"
    g.line(f"xp.{node.attrs['compare']}({x}, {y}, out={mask})")
    g.line(f"xp.negative({mask}, out={mask})")
    a_bits = g.view(f"{a}.view({bits})")
    out_bits = g.view(f"{out}.view({bits})")
    g.line(f"xp.bitwise_and({a_bits}, {mask}, out={out_bits})")


def _mask_dtype(node: Node) -> np.dtype:
    return np.dtype(f"int{8 * node.out.dtype.itemsize}")


def _emit_sigmoid(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    # Sigmoid.forward: where(x >= 0, 1 / (1 + e), e / (1 + e)) with e = exp(-|x|)
    x = g.arg(node.inputs[0])
    e, denominator, positive = scratch
    g.line(f"xp.absolute({x}, out={e})")
    g.line(f"xp.negative({e}, out={e})")
    g.line(f"xp.exp({e}, out={e})")
    g.line(f"xp.add({e}, 1.0, out={denominator})")
    g.line(f"xp.divide({e}, {denominator}, out={out})")
    g.line(f"xp.divide(1.0, {denominator}, out={denominator})")
    g.line(f"xp.greater_equal({x}, 0, out={positive})")
    g.line(f"xp.copyto({out}, {denominator}, where={positive})")


def _emit_reduce(function: str, ufunc: str | None = None) -> Callable:
    """np.sum / np.max are thin wrappers over add.reduce / maximum.reduce (the same loops);
    on NumPy the ufunc method is called directly, which halves the call's cost."""

    def emit(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
        attrs = node.attrs
        axes = attrs["axes"]
        axis = axes[0] if len(axes) == 1 else axes
        call = f"xp.{ufunc}.reduce" if ufunc and not g.cuda else f"xp.{function}"
        g.line(
            f"{call}({g.arg(node.inputs[0])}, axis={axis!r}, "
            f"keepdims={attrs['keepdims']}, out={out})"
        )

    return emit


def _emit_matmul(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    a, b = node.inputs
    if g.device_scalars and g.cuda and len(a.shape) == len(b.shape) == 2:
        # CuPy refuses cuBLAS calls during a capture: call cuBLAS directly (autograd/cublas.py)
        gemm, _ = load_gemm()
        if gemm is not None:
            g.line(f"{g.bind('gemm', gemm)}({g.arg(a)}, {g.arg(b)}, {out})")
            return
    g.line(f"xp.matmul({g.arg(a)}, {g.arg(b)}, out={out})")


def _emit_reshape_copy(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    # A reshape NumPy cannot do as a view copies in C order: write x into out seen in x's shape.
    x = node.inputs[0]
    shaped = g.view(f"{out}.reshape({x.shape!r})")
    g.line(f"xp.copyto({shaped}, {g.arg(x)})")


def _emit_unslice(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    window = g.view(f"{out}[{_index_text(node.attrs['index'])}]")
    g.line(f"{out}.fill(0)")
    g.line(f"xp.copyto({window}, {g.arg(node.inputs[0])})")


def _emit_concatenate(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    copies = g.plan.concat_copies.get(node) if g.plan else None
    if copies is None:
        parts = ", ".join(g.arg(x) for x in node.inputs)
        g.line(f"xp.concatenate(({parts},), axis={node.attrs['axis']}, out={out})")
        return
    offset = 0  # the parts computed in their slices are there already; copy the others
    for position, x in enumerate(node.inputs):
        if position in copies:
            g.line(f"xp.copyto({g.view(f'{out}[{offset}:{offset + x.size}]')}, {g.arg(x)})")
        offset += x.size


def _emit_im2col(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    x = node.inputs[0]
    kh, kw, stride, pad = (node.attrs[k] for k in ("kh", "kw", "stride", "padding"))
    source = g.arg(x)
    if pad:
        # A private padded image: its border is zeroed once, only the interior is written.
        n, h, w, c = x.shape
        shape = (n, h + 2 * pad, w + 2 * pad, c)
        padded = g.define(g.fresh("padded"), f"xp.zeros({shape!r}, {g.dtype(x.dtype)})")
        g.private_bytes += math.prod(shape) * x.dtype.itemsize
        interior = g.view(f"{padded}[:, {pad}:{pad + h}, {pad}:{pad + w}, :]")
        g.line(f"xp.copyto({interior}, {source})")
        source = padded
    if x.shape[3] != 1:
        windows = g.view(f"ops._window_view(xp, {source}, {kh}, {kw}, {stride})")
        g.line(f"xp.copyto({out}, {windows})")
        return
    # One channel: whole shifted images, as Im2col.forward does (rows, not single values).
    _, oh, ow = node.out.shape[:3]
    for (i, j), (rows, columns) in _offsets(kh, kw, stride, oh, ow):
        target = g.view(f"{out}[:, :, :, {i}, {j}, :]")
        g.line(f"xp.copyto({target}, {g.view(f'{source}[:, {rows}, {columns}, :]')})")


def _offsets(kh: int, kw: int, stride: int, oh: int, ow: int):
    """((i, j), (rows, columns)) slice texts of every kernel offset, as ops._shifted_windows."""
    for i in range(kh):
        for j in range(kw):
            rows = f"{i}:{i + stride * (oh - 1) + 1}:{stride}"
            columns = f"{j}:{j + stride * (ow - 1) + 1}:{stride}"
            yield (i, j), (rows, columns)


def _emit_col2im(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    cols = node.inputs[0]
    kh, kw, stride = (node.attrs[k] for k in ("kh", "kw", "stride"))
    n, oh, ow, _, _, c = cols.shape
    by_offset = g.view(f"{g.arg(cols)}.transpose((3, 4, 0, 1, 2, 5))")  # [i, j] -> a piece
    pieces = by_offset
    if ops.col2im_transposes(c):
        # As Col2im.forward: one transposing copy into a private buffer, then contiguous adds.
        shape = (kh, kw, n, oh, ow, c)
        pieces = g.define(g.fresh("pieces"), f"xp.empty({shape!r}, {g.dtype(cols.dtype)})")
        g.private_bytes += math.prod(shape) * cols.dtype.itemsize
        g.line(f"xp.copyto({pieces}, {by_offset})")
    g.line(f"{out}.fill(0)")
    for (i, j), (rows, columns) in _offsets(kh, kw, stride, oh, ow):
        target = g.view(f"{out}[:, {rows}, {columns}, :]")
        g.line(f"xp.add({target}, {g.view(f'{pieces}[{i}, {j}]')}, out={target})")


def _pool_windows(g: _Codegen, x: str, kernel: int, stride: int, oh: int, ow: int) -> list[str]:
    return [
        g.view(f"{x}[:, {rows}, {columns}, :]")
        for _, (rows, columns) in _offsets(kernel, kernel, stride, oh, ow)
    ]


def _emit_max_pool2d(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    _, oh, ow, _ = node.out.shape
    windows = _pool_windows(
        g, g.arg(node.inputs[0]), node.attrs["kernel"], node.attrs["stride"], oh, ow
    )
    g.line(f"xp.copyto({out}, {windows[0]})")
    for window in windows[1:]:
        g.line(f"xp.maximum({out}, {window}, out={out})")


def _emit_max_pool2d_grad(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    # MaxPool2dGrad.forward: grad[window] += where(hit, g, 0) with hit the window's first
    # maximal element; here with masks of 0 / 1 (then 0 / -1, and'ed with g's bits).
    grad, x, pooled = (g.arg(v) for v in node.inputs)
    _, oh, ow, _ = node.inputs[2].shape
    kernel, stride = node.attrs["kernel"], node.attrs["stride"]
    unclaimed, hit, mask, routed = scratch
    bits = f"xp.{_mask_dtype(node).name}"
    grad_bits = g.view(f"{grad}.view({bits})")
    routed_bits = g.view(f"{routed}.view({bits})")
    inputs = _pool_windows(g, x, kernel, stride, oh, ow)
    targets = _pool_windows(g, out, kernel, stride, oh, ow)
    g.line(f"{out}.fill(0)")
    g.line(f"{unclaimed}.fill(1)")
    for window, target in zip(inputs, targets, strict=True):
        g.line(f"xp.equal({window}, {pooled}, out={hit})")
        g.line(f"xp.bitwise_and({hit}, {unclaimed}, out={hit})")
        g.line(f"xp.subtract({unclaimed}, {hit}, out={unclaimed})")
        g.line(f"xp.negative({hit}, out={mask})")
        g.line(f"xp.bitwise_and({grad_bits}, {mask}, out={routed_bits})")
        g.line(f"xp.add({target}, {routed}, out={target})")


def _emit_one_hot(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    labels = g.view(f"{g.arg(node.inputs[0])}[..., None]")
    classes = g.bind("arange", g.xp.arange(node.attrs["classes"]))
    g.line(f"xp.equal({labels}, {classes}, out={scratch[0]})")
    g.line(f"xp.copyto({out}, {scratch[0]})")


def _emit_gather_rows(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    table, indices = (g.arg(x) for x in node.inputs)
    g.line(f"xp.take({table}, {indices}, axis=0, out={out})")


def _emit_uniform(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    attrs = node.attrs
    g.line(
        f"backend.uniform(xp, {g.key(attrs['key'])}, {attrs['shape']!r}, "
        f"{g.dtype(attrs['dtype'])}, out={out})"
    )


def _emit_flat_index(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    labels = node.inputs[0]
    classes = node.attrs["classes"]
    rows = g.bind("rows", g.xp.arange(labels.shape[0], dtype=labels.dtype) * classes)
    # Seen as unsigned, a negative label is huge: one max checks both ends of the range.
    if g.device_scalars and labels in g.graph.inputs:
        # Device code must not wait for the host: the caller checks the batch before copying.
        g.label_checks.append((g.graph.inputs.index(labels), classes))
    else:
        unsigned = g.view(f"{g.arg(labels)}.view(xp.uint{8 * labels.dtype.itemsize})")
        check = g.bind("labels_outside", _labels_outside)
        g.line(f"if {unsigned}.max() >= {classes}:")
        g.line(f"    {check}({g.arg(labels)}, {classes})")
    g.line(f"xp.add({g.arg(labels)}, {rows}, out={out})")


def check_labels(labels: np.ndarray, classes: int) -> None:
    """The host-side check of a batch's class labels (device-scalar programs)."""
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        _labels_outside(labels, classes)


def _labels_outside(labels: Any, classes: int) -> None:
    """Out-of-range labels would pick from the neighbouring row: refuse them instead."""
    low, high = int(labels.min()), int(labels.max())
    raise DataError(
        f"class labels must be in [0, {classes}) for {classes} outputs, "
        f"found labels in [{low}, {high}]"
    )


def _flat(g: _Codegen, value: Value) -> str:
    return g.view(f"{g.arg(value)}.reshape(-1)")


def _take(g: _Codegen, flat: str, index: str, out: str) -> None:
    # The labels are range-checked, so NumPy can skip its own check and the buffered `out`
    # that mode="raise" implies; CuPy's take has no mode.
    mode = "" if g.cuda else ', mode="clip"'
    g.line(f"{flat}.take({index}, out={out}{mode})")


def _emit_pick(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    x, index = node.inputs
    _take(g, _flat(g, x), g.arg(index), out)


def _emit_sub_at(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    x, index = node.inputs
    if g.arg(x) != out:
        g.line(f"xp.copyto({out}, {g.arg(x)})")
    flat, picked = g.view(f"{out}.reshape(-1)"), scratch[0]
    _take(g, flat, g.arg(index), picked)
    g.line(f"xp.subtract({picked}, 1, out={picked})")
    g.line(f"{flat}[{g.arg(index)}] = {picked}")


def _emit_generic(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    """Any other node: its forward allocates, the result is copied into the planned buffer."""
    if node.op.name in ("reshape",):
        _emit_reshape_copy(g, node, out, scratch)
        return
    function = g.bind(f"forward_{node.op.name}_", node.op.forward)
    keys = {k: v for k, v in node.attrs.items() if isinstance(v, RngKey)}
    attrs = {k: v for k, v in node.attrs.items() if k not in keys}
    args = [g.arg(x) for x in node.inputs] + [f"{k}={g.key(v)}" for k, v in keys.items()]
    if attrs:
        args.append(f"**{g.bind('attrs', attrs)}")
    g.line(f"xp.copyto({out}, {function}(xp, {', '.join(args)}))")


# ---------------------------------------------------------------- fused elementwise chains


def _fused_layout(node: Node, alias: int | None) -> tuple[dict, list[Spec], set[int]]:
    """Where each member of a fused chain writes on NumPy, its scratch, and the inputs the
    output buffer may replace.

    The spine is the root and the chain of first overwritable fused inputs below it; it is
    computed in place in one buffer wherever dtype and shape match the root, other members
    each in a scratch buffer. Spine layout (the default): that buffer is the output, and an
    input read only by the first member may share it. Root layout (`alias` an input only the
    root reads, or -1 to ask which): the spine runs in a scratch buffer and only the root
    writes the output, so the root may overwrite its input (p - lr * buf lands in p's own
    array).
    """
    body = node.attrs["body"]
    root = body[-1]
    members = {m.out: m for m in body}
    readers: dict = {}
    for member in body:
        for x in member.inputs:
            readers.setdefault(x, set()).add(member)
    spine = [root]
    while True:  # down through inputs the member may overwrite (not sigmoid's, not where's a)
        inner = next(
            (members[x] for x in spine[-1].inputs if x in members and _allows_alias(spine[-1], x)),
            None,
        )
        if inner is None:
            break
        spine.append(inner)
    root_only = {
        p
        for p, leaf in enumerate(node.inputs)
        if readers.get(leaf) == {root} and _allows_alias(root, leaf)
    }
    spine_only = _spine_aliasable(node, spine)
    use_root_layout = alias == -1 or (
        alias is not None and alias in root_only and alias not in spine_only
    )
    target: dict = {}
    scratch: list[Spec] = []
    chain: Any = "out"
    if use_root_layout:
        chain = 0
        scratch.append(Spec(root.out.shape, root.out.dtype))
    for member in body:
        same = member.out.shape == root.out.shape and member.out.dtype == root.out.dtype
        if member is root:
            place: Any = "out"
        elif member in spine and same:
            place = chain
        else:
            place = len(scratch)
            scratch.append(Spec(member.out.shape, member.out.dtype))
        own = SCRATCH[member.op.name](member) if member.op.name in SCRATCH else []
        target[member] = (place, list(range(len(scratch), len(scratch) + len(own))))
        scratch += own
    return target, scratch, root_only if use_root_layout else spine_only


def _spine_aliasable(node: Node, spine: list[Node]) -> set[int]:
    """Inputs only the first member reads, when that member starts the spine in the output."""
    body, root, bottom = node.attrs["body"], spine[0], spine[-1]
    same = bottom.out.shape == root.out.shape and bottom.out.dtype == root.out.dtype
    if body[0] is not bottom or not same:
        return set()
    return {
        p
        for p, leaf in enumerate(node.inputs)
        if all(m is bottom for m in body if leaf in m.inputs) and _allows_alias(bottom, leaf)
    }


def _allows_alias(member: Node, leaf: Any) -> bool:
    """Whether `member`'s kernel may write over `leaf` while reading it (an exact overlap)."""
    name = member.op.name
    if name == "sigmoid":
        return False
    positions = {p for p, x in enumerate(member.inputs) if x is leaf}
    if name == "where":
        return positions == {2}
    return bool(positions)


def _emit_loop(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    if g.device_scalars and any(isinstance(x, HostScalar) for x in node.inputs):
        raise ValueError("device scalars are for CuPy: the jit pass's loops take host numbers")
    args = [g.arg(x) for x in node.inputs]
    params, samples = [out], [g.ns[out]]  # each array once: the output, then the others
    for x, name in zip(node.inputs, args, strict=True):
        if name not in params:
            params.append(name)
            samples.append(g.ns[name] if isinstance(x, Value) else 0.0)
    slots = [params.index(name) for name in args]
    loop = compile_loop(node, slots, samples)
    g.line(f"{g.bind(f'loop{node.out.id}_', loop)}({', '.join(params)})")


def _emit_fused(g: _Codegen, node: Node, out: str, scratch: list[str]) -> None:
    if g.cuda:
        _emit_fused_kernel(g, node, out)
        return
    target, _, _ = _fused_layout(node, g.alias)
    for member in node.attrs["body"]:
        place, own = target[member]
        place = out if place == "out" else scratch[place]
        g.names[member.out] = place
        g.current = member
        EMITTERS[member.op.name](g, member, place, [scratch[i] for i in own])
        g.check(member)
    g.names[node.out] = out


def _emit_fused_kernel(g: _Codegen, node: Node, out: str) -> None:
    """One CuPy ElementwiseKernel for the chain; each step casts its operands to the dtype the
    NumPy ufunc would compute in (Python numbers are weak), so it rounds as eager does."""
    names: dict[Any, str] = {}
    params, args = [], []
    for index, leaf in enumerate(node.inputs):
        names[leaf] = f"in{index}"
        dtype = leaf.dtype.name if isinstance(leaf, Value) else "float64"
        params.append(f"{dtype} in{index}")
        args.append(g.arg(leaf, np.dtype(np.float64)))
    statements = []
    for member in node.attrs["body"]:
        expression = member_expression(member, names, C)
        names[member.out] = f"v{member.out.id}"
        statements.append(f"{CTYPES[member.out.dtype.name]} v{member.out.id} = {expression};")
    statements.append(f"out0 = v{node.out.id};")
    kernel = g.xp.ElementwiseKernel(
        ", ".join(params),
        f"{node.out.dtype.name} out0",
        " ".join(statements),
        f"trainctl_fused{node.out.id}",
        options=("--fmad=false",),
    )
    g.line(f"{g.bind('kernel', kernel)}({', '.join(args)}, {out})")


EMITTERS: dict[str, Callable[[_Codegen, Node, str, list[str]], None]] = {
    **{name: _emit_ufunc for name in UFUNCS},
    "relu": _emit_relu,
    "pow": _emit_pow,
    "cast": _emit_cast,
    "where": _emit_where,
    "sigmoid": _emit_sigmoid,
    "sum": _emit_reduce("sum", "add"),
    "max": _emit_reduce("max", "maximum"),
    "select": _emit_select,
    "mean": _emit_reduce("mean"),
    "matmul": _emit_matmul,
    "reshape": _emit_reshape_copy,
    "unslice": _emit_unslice,
    "concatenate": _emit_concatenate,
    "im2col": _emit_im2col,
    "col2im": _emit_col2im,
    "max_pool2d": _emit_max_pool2d,
    "max_pool2d_grad": _emit_max_pool2d_grad,
    "one_hot": _emit_one_hot,
    "gather_rows": _emit_gather_rows,
    "uniform": _emit_uniform,
    "flat_index": _emit_flat_index,
    "pick": _emit_pick,
    "sub_at": _emit_sub_at,
    "fused": _emit_fused,
    "loop": _emit_loop,
}

SCRATCH: dict[str, Callable[[Node], list[Spec]]] = {
    "sigmoid": lambda n: [
        Spec(n.out.shape, n.out.dtype),
        Spec(n.out.shape, n.out.dtype),
        Spec(n.out.shape, np.dtype(bool)),
    ],
    "max_pool2d_grad": lambda n: [
        Spec(n.inputs[2].shape, np.dtype(np.int8)),
        Spec(n.inputs[2].shape, np.dtype(np.int8)),
        Spec(n.inputs[2].shape, _mask_dtype(n)),
        Spec(n.inputs[2].shape, n.out.dtype),
    ],
    "one_hot": lambda n: [Spec(n.out.shape, np.dtype(bool))],
    "select": lambda n: [Spec(n.out.shape, _mask_dtype(n))],
    "sub_at": lambda n: [Spec(n.inputs[1].shape, n.out.dtype)],
}
