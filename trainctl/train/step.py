"""One definition of "a training step", runnable in eager or graph mode.

The trainer, `compare` and the benchmarks call `make_step(mode, ...)` and then only
`step.train(inputs, targets)` / `step.evaluate(inputs)`, so the two modes are interchangeable
and must leave the model, the optimizer and the generators in the same state.

`check_numerics=True` (`debug.check_numerics`) checks the batch, then every op's output
(eager) or every node's (graph), and stops at the first NaN or Inf with a NonFiniteError
naming it; without it nothing is checked and nothing is paid.

`cuda_graphs=True` (`graph.cuda_graphs`, on by default) replays each compiled step on a GPU as
one CUDA graph (`autograd/cuda_graphs.py`); steps that draw random numbers (dropout) or check
numerics are not captured, and `stats()` says so.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainctl.autograd import Tensor, no_grad, ops
from trainctl.autograd.compile import Program, check_labels, compile_graph
from trainctl.autograd.cublas import load_gemm
from trainctl.autograd.cuda_graphs import CapturedStep
from trainctl.autograd.graph import (
    Graph,
    TracingError,
    Value,
    format_graph,
    gradients,
    graph_to_dot,
    tracing,
)
from trainctl.autograd.passes import FlatState, PassRecord, check_pass_names, optimize
from trainctl.backend import Device, to_host
from trainctl.errors import TrainctlError
from trainctl.nn import Module
from trainctl.optim import LossScaler, Optimizer
from trainctl.train.numerics import (
    LOSS_ORIGIN,
    UPDATE_ORIGIN,
    EagerNumerics,
    LayerScopes,
    check_batch,
)

log = logging.getLogger("trainctl.graph")

Operand = ops.Operand
LossFn = Callable[[Operand, Operand], Operand]
MODES = ("eager", "graph")


class StepError(TrainctlError):
    """A training step that cannot be built: an unknown mode, or a model on another device."""


def clip_by_global_norm(grads: Sequence[Operand], clip: float) -> list[Operand]:
    """Scale every gradient by min(1, clip / (norm + 1e-6)), norm over all of them.

    Written with ops only, so eager and graph mode do the same arithmetic in the same order.
    """
    total = None
    for g in grads:
        square = ops.reduce_sum(g * g)
        total = square if total is None else total + square
    ratio = clip / (ops.sqrt(total) + 1e-6)
    scale = ops.where(ratio < 1.0, ratio, 1.0)
    return [g * scale for g in grads]


def host_to_device(array: Any, device: Device, dtype: np.dtype) -> Any:
    """A batch array on `device`; floating data is cast to `dtype`, labels keep their dtype."""
    array = np.asarray(to_host(array)) if not hasattr(array, "dtype") else array
    floating = np.issubdtype(array.dtype, np.floating)
    return device.asarray(array, dtype=dtype if floating else None)


class Step:
    """What the trainer calls once per batch; EagerStep and GraphStep share this interface."""

    traces: int = 0

    def __init__(
        self,
        model: Module,
        loss_fn: LossFn,
        optimizer: Optimizer,
        *,
        device: Device,
        dtype: np.dtype,
        grad_clip: float | None = None,
        check_numerics: bool = False,
        loss_scaler: LossScaler | None = None,
    ) -> None:
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.loss_scaler = loss_scaler
        self.device, self.dtype = device, np.dtype(dtype)
        if grad_clip is not None and not grad_clip > 0:
            raise StepError(f"grad_clip must be a number > 0 or null, got {grad_clip!r}")
        self.grad_clip = None if grad_clip is None else float(grad_clip)
        self.check_numerics = check_numerics
        _check_placement(model, device, self.dtype)

    def train(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        """Forward in train mode, loss, backward, clipping, update; returns the loss."""
        raise NotImplementedError

    def _output(self, out: Operand) -> Operand:
        """The model's output in the parameters' dtype (float32 under mixed precision)."""
        return out if self.model.compute_dtype is None else ops.cast(out, self.dtype)

    def _loss(self, out: Operand, targets: Operand) -> Operand:
        return self.loss_fn(self._output(out), targets)

    def _scalars(self) -> dict[str, float]:
        """The host numbers of the next step: the optimizer's, and the loss scale's."""
        scalars = self.optimizer.step_scalars()
        if self.loss_scaler is not None:
            scalars = {**scalars, **self.loss_scaler.step_scalars()}
        return scalars

    def evaluate(self, inputs: np.ndarray) -> np.ndarray:
        """Forward in eval mode; the outputs as a host array."""
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        """Trace/compile timings and graph sizes (empty in eager mode)."""
        return {}


class EagerStep(Step):
    """The step run op by op on the tape, exactly as a hand-written PyTorch-style loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.numerics = EagerNumerics(self.model, self.device.xp) if self.check_numerics else None

    def train(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        if self.numerics is None:
            return self._train(inputs, targets)
        check_batch(inputs, targets)
        with self.numerics.watching():
            return self._train(inputs, targets)

    def evaluate(self, inputs: np.ndarray) -> np.ndarray:
        if self.numerics is None:
            return self._evaluate(inputs)
        check_batch(inputs, None)
        with self.numerics.watching():
            return self._evaluate(inputs)

    def _train(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        x = Tensor._wrap(host_to_device(inputs, self.device, self.dtype), self.device)
        y = Tensor._wrap(host_to_device(targets, self.device, self.dtype), self.device)
        self.model.train()
        loss = self._loss(self.model(x), y)
        self.optimizer.zero_grad()
        scaler = self.loss_scaler
        if scaler is None:
            loss.backward()
        else:
            scalars = scaler.step_scalars()
            (loss * scalars["loss_scale"]).backward()
        with_grad = [p for p in self.optimizer.params if p.grad is not None]
        finite = True
        if scaler is not None:
            with no_grad():
                for p in with_grad:
                    p.grad = p.grad * scalars["inverse_loss_scale"]
            xp = self.device.xp
            finite = all(bool(xp.isfinite(p.grad.data).all()) for p in with_grad)
        if self.grad_clip is not None:
            with no_grad():
                clipped = clip_by_global_norm([p.grad for p in with_grad], self.grad_clip)
            for p, g in zip(with_grad, clipped, strict=True):
                p.grad = g
        if finite:  # a float16 step whose gradients overflowed is skipped
            self.optimizer.step()
        if scaler is not None:
            scaler.update(finite)
        return float(loss.item())

    def _evaluate(self, inputs: np.ndarray) -> np.ndarray:
        x = Tensor._wrap(host_to_device(inputs, self.device, self.dtype), self.device)
        self.model.eval()
        with no_grad():
            out = self._output(self.model(x))
        return np.array(out.numpy(), copy=True)


@dataclass
class _Compiled:
    """One traced and compiled signature: its program and how its state slots bind."""

    signature: tuple
    graph: Graph
    program: Program
    passes: list[PassRecord]
    nodes_traced: int
    params: list[tuple[Tensor, Any]] = field(default_factory=list)
    buffers: list[tuple[list[tuple[Module, str]], Any]] = field(default_factory=list)
    optimizer_state: dict[int, dict[str, Any]] = field(default_factory=dict)
    updated: list[int] | None = None  # training: indices of the parameters the step updates
    captured: CapturedStep | None = None  # with CUDA graphs

    def run(self, args: list[Any], bound: dict[str, Any]) -> tuple:
        if self.captured is not None:  # on a GPU: the batch is always copied, never bound
            return self.captured(*args)
        return self.program.function(*args, **bound)


class GraphStep(Step):
    """The step traced once per input signature, optimized, compiled and replayed.

    The step owns one array per state slot (parameters, buffers, optimizer state) that every
    compiled signature reads and updates in place; tensors that someone else rebound (a
    checkpoint load, an eager step) are copied in before a replay, and after it the model and
    the optimizer point at the owned arrays, exactly as `opt.step()` would have left them.
    """

    def __init__(
        self,
        model: Module,
        loss_fn: LossFn,
        optimizer: Optimizer,
        *,
        device: Device,
        dtype: np.dtype,
        grad_clip: float | None = None,
        disabled_passes: Sequence[str] = (),
        plan_memory: bool = True,
        check_numerics: bool = False,
        cuda_graphs: bool = False,
        device_scalars: bool | None = None,
        loss_scaler: LossScaler | None = None,
    ) -> None:
        """`device_scalars` keeps the host numbers in device arrays, as CUDA graphs need; it
        follows `cuda_graphs` unless set (the tests set it to check that code on the CPU)."""
        super().__init__(
            model,
            loss_fn,
            optimizer,
            device=device,
            dtype=dtype,
            grad_clip=grad_clip,
            check_numerics=check_numerics,
            loss_scaler=loss_scaler,
        )
        self.scopes = LayerScopes(model) if check_numerics else None
        check_pass_names(disabled_passes)
        self.disabled_passes, self.plan_memory = tuple(disabled_passes), plan_memory
        self.cuda_graphs = cuda_graphs and device.name == "cuda" and plan_memory
        self.cuda_graphs = self.cuda_graphs and not check_numerics
        self.device_scalars = self.cuda_graphs if device_scalars is None else device_scalars
        # CUDA graphs are captured on a stream of their own (never the legacy default one);
        # a blocking stream, so it stays ordered with whatever else runs on the default one.
        self._stream = device.xp.cuda.Stream() if self.cuda_graphs else None
        self._compiled: dict[tuple, _Compiled] = {}
        self._by_key: dict[tuple, _Compiled] = {}
        self._arrays: dict[str, Any] = {}
        self._installed: dict[int, dict[str, Tensor]] = {}  # optimizer entries this step made
        self.traces = 0
        self._trace_seconds = self._compile_seconds = 0.0

    # ------------------------------------------------------------ the step

    def train(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        if self.check_numerics:
            check_batch(inputs, targets)
        compiled = self._lookup("train", inputs, targets)
        if not self.model.training:
            self.model.train()
        with self._on_stream():
            bound = self._load(compiled, inputs, targets)
            scalars = self._scalars()
            args = [scalars[name] for name in compiled.program.scalar_names]
            for generator, _ in compiled.graph.generators:
                args += [generator.seed, generator.counter]
            loss, *finite = compiled.run(args, bound)
            finite = bool(finite[0]) if finite else True
            self._store(compiled, finite)
            if self.loss_scaler is not None:
                self.loss_scaler.update(finite)
            return float(loss)

    def evaluate(self, inputs: np.ndarray) -> np.ndarray:
        if self.check_numerics:
            check_batch(inputs, None)
        compiled = self._lookup("eval", inputs)
        if self.model.training:
            self.model.eval()
        with self._on_stream():
            bound = self._load(compiled, inputs)
            (out,) = compiled.run([], bound)
            return np.array(to_host(out), copy=True)

    def _on_stream(self) -> contextlib.AbstractContextManager:
        return self._stream if self._stream is not None else contextlib.nullcontext()

    def _lookup(self, kind: str, *batch: Any) -> _Compiled:
        """The compiled step for these arrays: a dict hit on their shapes and dtypes as they
        come; on a miss, the signature they cast to (float data -> the step's dtype)."""
        key = (kind, *[(x.shape, x.dtype) for x in batch])
        compiled = self._by_key.get(key)
        if compiled is None:
            signature = (kind, *(part for x in batch for part in self._signature(x)))
            compiled = self._compiled.get(signature) or self._build(signature)
            self._by_key[key] = compiled
        return compiled

    def _signature(self, array: Any) -> tuple:
        dtype = np.dtype(array.dtype)
        return (tuple(array.shape), self.dtype if np.issubdtype(dtype, np.floating) else dtype)

    def _load(self, compiled: _Compiled, *batch: Any) -> dict[str, Any]:
        """Bring in any state someone rebound since the last replay; return the batch arrays
        the step can read where they are (C-ordered NumPy arrays of the traced dtype), by
        input name, after copying the others into the step's own input arrays."""
        xp = self.device.xp
        bound = {}
        program = compiled.program
        for index, classes in program.label_checks:
            check_labels(to_host(batch[index]), classes)
        for name, target, array in zip(program.input_names, program.inputs, batch, strict=True):
            if xp is not np:
                target.set(np.ascontiguousarray(to_host(array), dtype=target.dtype))
            elif (
                type(array) is np.ndarray
                and array.dtype == target.dtype
                and array.flags.c_contiguous
            ):
                bound[name] = array
            else:
                np.copyto(target, array, casting="unsafe")
        for param, owned in compiled.params:
            if param.data is not owned:
                xp.copyto(owned, param.data)
                param.data = owned
        for places, owned in compiled.buffers:
            module, key = places[0]
            current = module.__dict__[key].data
            if current is not owned:
                xp.copyto(owned, current)
        state = self.optimizer.state
        for index, slots in compiled.optimizer_state.items():
            entry = state.get(index)
            if entry is not None and entry is self._installed.get(index):
                continue  # the entry this step left, still holding its arrays
            for name, owned in slots.items():
                if entry is None:
                    owned.fill(0)
                elif entry[name].data is not owned:
                    xp.copyto(owned, entry[name].data)
        return bound

    def _store(self, compiled: _Compiled, stepped: bool = True) -> None:
        """Point the model and the optimizer at the updated arrays, as opt.step() would;
        a skipped step (`stepped` False: its float16 gradients overflowed) leaves the clock."""
        for places, owned in compiled.buffers:
            for module, key in places:
                if module.__dict__[key].data is not owned:
                    setattr(module, key, Tensor._wrap(owned, self.device))
        if compiled.updated is None:
            return
        state = self.optimizer.state
        for index in compiled.updated:
            entry = state.get(index)
            if entry is None or entry is not self._installed.get(index):
                slots = compiled.optimizer_state.get(index, {})
                entry = {name: Tensor._wrap(owned, self.device) for name, owned in slots.items()}
                state[index] = self._installed[index] = entry
        self.optimizer.step_count += int(stepped)
        for generator, draws in compiled.graph.generators:
            generator.counter += draws

    # ------------------------------------------------------------ tracing and compiling

    def _build(self, signature: tuple) -> _Compiled:
        what = "training" if signature[0] == "train" else "evaluation"
        log.debug("graph mode: tracing the %s step for input signature %s", what, signature[1:])
        start = time.perf_counter()
        graph, updated = self._trace(signature)
        traced = time.perf_counter()
        optimized, records, program = self._compile(graph)
        self.traces += 1
        self._trace_seconds += traced - start
        self._compile_seconds += time.perf_counter() - traced
        compiled = _Compiled(signature, optimized, program, records, len(graph.nodes))
        for name, source in _slots(optimized):
            owned = self._arrays[name]
            kind = name.split(":", 1)[0]
            if kind == "param":
                compiled.params.append((source, owned))
            elif kind == "buffer":
                compiled.buffers.append((source, owned))
            else:
                index, state_name = source
                compiled.optimizer_state.setdefault(index, {})[state_name] = owned
        compiled.updated = updated
        if self.cuda_graphs and program.device_step is not None:
            compiled.captured = CapturedStep(program, self._stream)
        self._compiled[signature] = compiled
        return compiled

    def _trace(self, signature: tuple) -> tuple[Graph, list[int] | None]:
        """The traced graph, and for training the indices of the parameters it updates."""
        if signature[0] == "train":
            return self._trace_train(*signature[1:])
        return self._trace_eval(*signature[1:]), None

    def _compile(self, graph: Graph) -> tuple[Graph, list[PassRecord], Program]:
        optimized, records = optimize(graph, self.disabled_passes)
        for slot in optimized.state:
            if isinstance(slot.source, FlatState):
                self._flat_arrays(slot)
            elif slot.name not in self._arrays:
                value = slot.value
                self._arrays[slot.name] = self.device.xp.empty(value.shape, value.dtype)
        device_scalars = (
            self.device_scalars
            and self.plan_memory
            and not self.check_numerics
            and not optimized.generators
            and (not self.cuda_graphs or load_gemm()[0] is not None)
        )
        program = compile_graph(
            optimized, self._arrays, self.plan_memory, self.check_numerics, device_scalars
        )
        return optimized, records, program

    def _flat_arrays(self, slot: Any) -> None:
        """One array for a flat slot, its members views of it. Members that had arrays of
        their own (a signature compiled before, e.g. evaluation) move in, and the programs
        built on the old arrays are dropped: they are traced again when next used."""
        if slot.name in self._arrays:
            return
        flat = self.device.xp.empty(slot.value.shape, slot.value.dtype)
        moved = False
        for member in slot.source.members:
            view = flat[member.offset : member.offset + int(np.prod(member.shape))]
            view = view.reshape(member.shape)
            if member.name in self._arrays:
                self.device.xp.copyto(view, self._arrays[member.name])
                moved = True
            self._arrays[member.name] = view
        self._arrays[slot.name] = flat
        if moved:
            self._compiled.clear()
            self._by_key.clear()

    def _trace_train(self, x_shape, x_dtype, y_shape, y_dtype) -> tuple[Graph, list[int]]:
        model, optimizer = self.model, self.optimizer
        with tracing(self.device, model) as tracer, self._recording(tracer.graph):
            graph = tracer.graph
            x = graph.add_input("inputs", ops.Spec(x_shape, x_dtype))
            y = graph.add_input("targets", ops.Spec(y_shape, y_dtype))
            params = [
                tracer.add_parameter(f"optimizer.{i}", p) for i, p in enumerate(optimizer.params)
            ]
            model.train()
            out = model(x)
            graph.origin = LOSS_ORIGIN
            loss = self._loss(out, y)
            if not isinstance(loss, Value):
                raise TracingError("the loss function must return a value computed from the model")
            graph.outputs["loss"] = loss
            scalars = {
                name: graph.add_scalar(name, value) for name, value in self._scalars().items()
            }
            scaled = loss if self.loss_scaler is None else loss * scalars["loss_scale"]
            grads = gradients(scaled, params)
            graph.origin = UPDATE_ORIGIN
            active = [
                (i, p, g)
                for i, (p, g) in enumerate(zip(params, grads, strict=True))
                if g is not None
            ]
            with no_grad():
                finite = None
                if self.loss_scaler is not None and active:
                    inverse = scalars["inverse_loss_scale"]
                    active = [(i, p, g * inverse) for i, p, g in active]
                    finite = graph.outputs["finite"] = _all_finite([g for _, _, g in active])
                if self.grad_clip is not None and active:
                    clipped = clip_by_global_norm([g for _, _, g in active], self.grad_clip)
                    active = [(i, p, g) for (i, p, _), g in zip(active, clipped, strict=True)]
                rule_scalars = {name: scalars[name] for name in optimizer.step_scalars()}
                for index, param, grad in active:
                    spec = ops.Spec(param.shape, param.dtype)
                    state = {
                        name: graph.add_state(f"opt:{index}.{name}", spec, (index, name))
                        for name in optimizer.state_names
                    }
                    new_param, new_state = optimizer.update_rule(param, grad, state, **rule_scalars)
                    if finite is not None:  # an overflowed float16 step changes nothing
                        new_param = ops.where(finite, new_param, param)
                        new_state = {
                            name: ops.where(finite, value, state[name])
                            for name, value in new_state.items()
                        }
                    self._set_output(graph, param.name, param, new_param)
                    for name, value in new_state.items():
                        self._set_output(graph, f"opt:{index}.{name}", state[name], value)
        return graph, [index for index, _, _ in active]

    @staticmethod
    def _set_output(graph: Graph, name: str, old: Value, new: Any) -> None:
        if new is old:
            return
        if not isinstance(new, Value) or new.shape != old.shape or new.dtype != old.dtype:
            found = f"{new.dtype}{list(new.shape)}" if isinstance(new, Value) else repr(new)
            raise TracingError(
                f"the update of {name} must keep {old.dtype}{list(old.shape)}, got {found}"
            )
        graph.outputs[name] = new

    def _recording(self, graph: Graph) -> contextlib.AbstractContextManager:
        """With check_numerics: note in the graph which layer each traced value came from."""
        return self.scopes.recording(graph) if self.scopes else contextlib.nullcontext()

    def _trace_eval(self, x_shape, x_dtype) -> Graph:
        with tracing(self.device, self.model) as tracer, self._recording(tracer.graph):
            x = tracer.graph.add_input("inputs", ops.Spec(x_shape, x_dtype))
            self.model.eval()
            with no_grad():
                out = self.model(x)
            if not isinstance(out, Value):
                raise TracingError("the model must return a value computed from its input")
            tracer.graph.outputs["output"] = self._output(out)
        return tracer.graph

    def stats(self) -> dict[str, Any]:
        """Trace and compile seconds, node counts before/after each pass, buffers and bytes."""
        return {
            "traces": self.traces,
            "trace_seconds": self._trace_seconds,
            "compile_seconds": self._compile_seconds,
            "signatures": [
                {
                    "kind": c.signature[0],
                    "shapes": [list(part) for part in c.signature[1::2]],
                    "nodes_traced": c.nodes_traced,
                    "nodes_optimized": len(c.graph.nodes),
                    "passes": [
                        {"name": r.name, "before": r.nodes_before, "after": r.nodes_after}
                        for r in c.passes
                    ],
                    "buffers": c.program.buffers,
                    "buffer_bytes": c.program.buffer_bytes,
                    **({"cuda_graph": _cuda_graph_status_of(c)} if self.cuda_graphs else {}),
                }
                for c in self._compiled.values()
            ],
        }


def _all_finite(grads: Sequence[Operand]) -> Operand:
    """True when no gradient holds an Inf or NaN: x * 0 is 0 for every finite x and NaN for
    the others, and one NaN makes the whole sum NaN."""
    total = sum(ops.reduce_sum(g * 0.0) for g in grads)
    return ops.equal(total, 0.0)


def _cuda_graph_status_of(compiled: _Compiled) -> dict[str, Any]:
    if compiled.captured is not None:
        return {**compiled.captured.status(), "matmul": load_gemm()[1]}
    if compiled.graph.generators:
        reason = "the step draws random numbers (dropout) from host-seeded generators"
    else:
        reason = load_gemm()[1]
    return {"captured": False, "reason": reason}


def _slots(graph: Graph) -> list[tuple[str, Any]]:
    """(name, source) of every state slot, the members of flat slots one by one."""
    slots = []
    for slot in graph.state:
        if isinstance(slot.source, FlatState):
            slots += [(member.name, member.source) for member in slot.source.members]
        else:
            slots.append((slot.name, slot.source))
    return slots


STAGES = ("traced", "optimized")
FORMATS = ("text", "dot", "code")


def render_graph(
    model: Module,
    loss_fn: LossFn,
    optimizer: Optimizer,
    inputs_shape: Sequence[int],
    targets_shape: Sequence[int],
    targets_dtype: Any,
    *,
    device: Device,
    dtype: Any,
    inputs_dtype: Any = None,
    grad_clip: float | None = None,
    stage: str = "optimized",
    fmt: str = "text",
    disabled_passes: Sequence[str] = (),
) -> str:
    """The training step's graph as `trainctl graph` prints it: IR text, Graphviz DOT or the
    generated Python source, under a header of node counts per pass, buffers and bytes.

    `stage="traced"` shows the graph as recorded (its code: one forward call per node);
    nothing runs and the model, optimizer and generators are left as they were.
    """
    if stage not in STAGES:
        raise StepError(f"unknown stage {stage!r}: expected one of {', '.join(STAGES)}")
    if fmt not in FORMATS:
        raise StepError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    step = GraphStep(
        model,
        loss_fn,
        optimizer,
        device=device,
        dtype=dtype,
        grad_clip=grad_clip,
        disabled_passes=disabled_passes,
        plan_memory=stage == "optimized",
    )
    inputs_dtype = np.dtype(inputs_dtype or dtype)
    signature = (
        "train",
        tuple(inputs_shape),
        step.dtype if np.issubdtype(inputs_dtype, np.floating) else inputs_dtype,
        tuple(targets_shape),
        np.dtype(targets_dtype),
    )
    traced, _ = step._trace(signature)
    optimized, records, program = step._compile(traced)
    shown = optimized if stage == "optimized" else traced
    if stage == "traced":
        program = compile_graph(traced, step._arrays, plan_memory=False)
    header = [
        f"training step of {type(model).__name__}: inputs {signature[2]}{list(signature[1])}, "
        f"targets {signature[4]}{list(signature[3])}, {device}",
        f"traced: {len(traced.nodes)} nodes",
        *(f"pass {r.name}: {r.nodes_before} -> {r.nodes_after} nodes" for r in records),
        f"optimized: {len(optimized.nodes)} nodes",
        f"buffers: {program.buffers}, {program.buffer_bytes} bytes"
        + ("" if stage == "optimized" else " (the traced stage allocates as it runs)"),
    ]
    if fmt == "code":
        return "\n".join("# " + line for line in header) + "\n" + program.source
    body = format_graph(shown) if fmt == "text" else graph_to_dot(shown)
    comment = "# " if fmt == "text" else "// "
    return "\n".join(comment + line for line in header) + "\n" + body + "\n"


def make_step(
    mode: str,
    model: Module,
    loss_fn: LossFn,
    optimizer: Optimizer,
    *,
    device: Device,
    dtype: np.dtype,
    grad_clip: float | None = None,
    disabled_passes: Sequence[str] = (),
    plan_memory: bool = True,
    check_numerics: bool = False,
    cuda_graphs: bool = False,
    device_scalars: bool | None = None,
    loss_scaler: LossScaler | None = None,
) -> Step:
    """The training step of `model` in `mode` ("eager" or "graph").

    `disabled_passes` and `plan_memory=False` switch graph-mode optimizations off for
    debugging; eager mode has none. `check_numerics` stops at the first op (node) whose
    output holds NaN or Inf, naming it (slow: for finding where a run goes wrong).
    `cuda_graphs` replays graph mode's steps as CUDA graphs on a GPU (ignored elsewhere);
    `device_scalars` is GraphStep's (the code CUDA graphs need, for checking on the CPU).
    `loss_scaler` scales the loss of a float16 mixed-precision model (optim/loss_scale.py).
    """
    if mode == "eager":
        return EagerStep(
            model,
            loss_fn,
            optimizer,
            device=device,
            dtype=dtype,
            grad_clip=grad_clip,
            check_numerics=check_numerics,
            loss_scaler=loss_scaler,
        )
    if mode == "graph":
        return GraphStep(
            model,
            loss_fn,
            optimizer,
            device=device,
            dtype=dtype,
            grad_clip=grad_clip,
            disabled_passes=disabled_passes,
            plan_memory=plan_memory,
            check_numerics=check_numerics,
            cuda_graphs=cuda_graphs,
            device_scalars=device_scalars,
            loss_scaler=loss_scaler,
        )
    raise StepError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")


def _check_placement(model: Module, device: Device, dtype: np.dtype) -> None:
    for name, t in model.named_parameters():
        if t.device != device:
            raise StepError(
                f"parameter {name} is on {t.device}, the step runs on {device}: "
                f"call model.to({device.name!r}) first"
            )
        if np.issubdtype(t.dtype, np.floating) and t.dtype != dtype:
            raise StepError(
                f"parameter {name} is {t.dtype}, the step runs in {dtype}: "
                f"call model.to(dtype={dtype.name!r}) first"
            )
