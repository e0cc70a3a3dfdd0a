"""A training step, defined once for both modes, and recorded as a graph for graph mode.

A step is a model, a loss function and an optimizer plus `StepOptions`. Eager mode runs it op
by op (`train/step.py`); `trace_training` records the same arithmetic as a `Graph`: forward,
loss, gradients from the ops' vjp rules, clipping, loss scaling and the optimizer's update
rule appended, its new state as graph outputs. Everything is duck-typed: the model is called
and has `train()`, `eval()`, `compute_dtype` and `named_modules()`; the optimizer has
`params`, `state_names`, `step_scalars()` and `update_rule()`, and may have `flat_groups()`
(without it each parameter is updated on its own); so are the loss scaler's `step_scalars()`
and the optional `scopes` (`recording(graph)`, for `check_numerics`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainctl.autograd import ops
from trainctl.autograd.graph import Graph, Tracer, TracingError, Value, gradients, tracing
from trainctl.autograd.guards import GuardRecorder
from trainctl.autograd.numerics import LOSS_ORIGIN, UPDATE_ORIGIN
from trainctl.autograd.tensor import no_grad
from trainctl.backend import Device
from trainctl.errors import TrainctlError

Operand = ops.Operand
LossFn = Callable[[Operand, Operand], Operand]


class StepError(TrainctlError):
    """A training step that cannot be built: an unknown mode or option, or misplaced model."""


@dataclass(frozen=True)
class StepOptions:
    """How a step runs beyond model, loss and optimizer; the last five are graph mode's."""

    grad_clip: float | None = None
    check_numerics: bool = False  # stop at the first op whose output holds NaN or Inf, naming it
    loss_scaler: Any = None  # scales the loss of a float16 mixed-precision model
    disabled_passes: tuple[str, ...] = ()  # these and plan_memory off: for debugging
    plan_memory: bool = True
    cuda_graphs: bool = False  # replay as CUDA graphs on a GPU (ignored elsewhere)
    # Host numbers in device arrays, as CUDA graphs need; None: as cuda_graphs (tests set it).
    device_scalars: bool | None = None
    max_traces: int = 8  # guarded traces kept per signature (`guards.py`); more run eagerly

    def __post_init__(self) -> None:
        clip = self.grad_clip
        if clip is not None and not clip > 0:
            raise StepError(f"grad_clip must be a number > 0 or null, got {clip!r}")
        if self.max_traces < 1:
            raise StepError(f"max_traces must be an integer >= 1, got {self.max_traces!r}")
        object.__setattr__(self, "grad_clip", None if clip is None else float(clip))
        object.__setattr__(self, "disabled_passes", tuple(self.disabled_passes))


def clip_by_global_norm(grads: Sequence[Operand], clip: float) -> list[Operand]:
    """Scale every gradient by min(1, clip / (norm + 1e-6)), norm over all of them.

    Written with ops only, so eager and graph mode do the same arithmetic in the same order.
    """
    total = None
    for g in grads:
        square = (g * g).sum()
        total = square if total is None else total + square
    ratio = clip / (ops.sqrt(total) + 1e-6)
    scale = ops.where(ratio < 1.0, ratio, 1.0)
    return [g * scale for g in grads]


def model_output(model: Any, out: Operand, dtype: np.dtype) -> Operand:
    """The model's output in the parameters' dtype (float32 under mixed precision)."""
    return out if model.compute_dtype is None else ops.cast(out, dtype)


@dataclass
class StepDefinition:
    """What one training step computes; traced by graph mode, run by eager mode."""

    model: Any
    loss_fn: LossFn
    optimizer: Any
    device: Device
    dtype: np.dtype
    options: StepOptions
    scopes: Any = None  # with check_numerics: names the layer each traced value came from
    # Data parallelism (trainctl.distributed) sets it before the first trace: its
    # `reduce(loss, grads)` averages both over the ranks, between backward and the update.
    gradient_reducer: Any = None

    def loss(self, out: Operand, targets: Operand) -> Operand:
        return self.loss_fn(model_output(self.model, out, self.dtype), targets)

    def scalars(self) -> dict[str, float]:
        """The host numbers of the next step: the optimizer's, and the loss scale's."""
        scalars = self.optimizer.step_scalars()
        if self.options.loss_scaler is not None:
            scalars = {**scalars, **self.options.loss_scaler.step_scalars()}
        return scalars

    @contextlib.contextmanager
    def _tracing(self, batch: Sequence[Any] | None) -> Iterator[Tracer]:
        """`tracing` the model; with the real `batch` (one array per graph input), values the
        model reads as Python numbers become the graph's guards instead of refusing."""
        with tracing(self.device, self.model) as tracer:
            graph = tracer.graph
            if batch is not None:
                graph.recorder = GuardRecorder(tracer, batch)
            try:
                with self.scopes.recording(graph) if self.scopes else contextlib.nullcontext():
                    yield tracer
            finally:
                graph.guards = graph.recorder.guards if graph.recorder is not None else []
                graph.recorder = None

    def trace_training(
        self, inputs: ops.Spec, targets: ops.Spec, batch: Sequence[Any] | None = None
    ) -> tuple[Graph, list[int]]:
        """The training step's graph, and the indices of the parameters it updates."""
        model, optimizer, scaler = self.model, self.optimizer, self.options.loss_scaler
        with self._tracing(batch) as tracer:
            graph = tracer.graph
            x, y = graph.add_input("inputs", inputs), graph.add_input("targets", targets)
            params = [
                tracer.add_parameter(f"optimizer.{i}", p) for i, p in enumerate(optimizer.params)
            ]
            model.train()
            out = model(x)
            graph.origin = LOSS_ORIGIN
            loss = self.loss(out, y)
            if not isinstance(loss, Value):
                raise TracingError("the loss function must return a value computed from the model")
            graph.outputs["loss"] = loss
            scalars = {
                name: graph.add_scalar(name, value) for name, value in self.scalars().items()
            }
            scaled = loss if scaler is None else loss * scalars["loss_scale"]
            grads = gradients(scaled, params)
            graph.origin = UPDATE_ORIGIN
            active = [i for i, g in enumerate(grads) if g is not None]
            grads = [grads[i] for i in active]
            if self.gradient_reducer is not None:
                loss, grads = self.gradient_reducer.reduce(loss, grads)
                graph.outputs["loss"] = loss
            with no_grad():
                finite = None
                if scaler is not None and grads:
                    grads = [g * scalars["inverse_loss_scale"] for g in grads]
                    finite = graph.outputs["finite"] = _all_finite(grads)
                if self.options.grad_clip is not None and grads:
                    grads = clip_by_global_norm(grads, self.options.grad_clip)
                rule_scalars = {name: scalars[name] for name in optimizer.step_scalars()}
                grad_of = dict(zip(active, grads, strict=True))
                for group in self._update_groups(graph, active):
                    members = [(i, params[i], grad_of[i]) for i in group]
                    self._append_update(graph, members, rule_scalars, finite)
        return graph, active

    def _update_groups(self, graph: Graph, active: list[int]) -> list[list[int]]:
        """The parameters each update covers as one flat array: the optimizer's groups, as
        eager `opt.step()` uses them (the `flatten` pass keeps their layout between steps).
        One parameter each when the model branched on values: traces of other outcomes may
        update other parameters, and their flat layouts would claim the same ones twice."""
        flat_groups = getattr(self.optimizer, "flat_groups", None)
        if flat_groups is None or (graph.recorder is not None and graph.recorder.guards):
            return [[index] for index in active]
        return flat_groups(active)

    def _append_update(
        self, graph: Graph, members: list[tuple[int, Value, Value]], scalars: dict, finite: Any
    ) -> None:
        """The optimizer's update rule over the (index, parameter, gradient) `members`, laid
        out flat when there are several; the results are graph outputs, one per state slot."""
        states = [
            {
                name: graph.add_state(
                    f"opt:{index}.{name}", ops.Spec(param.shape, param.dtype), (index, name)
                )
                for name in self.optimizer.state_names
            }
            for index, param, _ in members
        ]
        param = _flat([p for _, p, _ in members])
        state = {name: _flat([s[name] for s in states]) for name in self.optimizer.state_names}
        grad = _flat([g for _, _, g in members])
        new_param, new_state = self.optimizer.update_rule(param, grad, state, **scalars)
        if finite is not None:  # an overflowed float16 step changes nothing
            new_param = ops.where(finite, new_param, param)
            new_state = {
                name: ops.where(finite, value, state[name]) for name, value in new_state.items()
            }
        _set_flat_outputs(graph, [(p.name, p) for _, p, _ in members], param, new_param)
        indices = [index for index, _, _ in members]
        for name, value in new_state.items():
            slots = [(f"opt:{i}.{name}", s[name]) for i, s in zip(indices, states, strict=True)]
            _set_flat_outputs(graph, slots, state[name], value)

    def trace_evaluation(self, inputs: ops.Spec, batch: Sequence[Any] | None = None) -> Graph:
        """The model's forward pass in eval mode, its output in the parameters' dtype."""
        with self._tracing(batch) as tracer:
            x = tracer.graph.add_input("inputs", inputs)
            self.model.eval()
            with no_grad():
                out = self.model(x)
            if not isinstance(out, Value):
                raise TracingError("the model must return a value computed from its input")
            tracer.graph.outputs["output"] = model_output(self.model, out, self.dtype)
        return tracer.graph


def _flat(values: list[Value]) -> Value:
    """One value as it is; several flattened and concatenated, in order."""
    if len(values) == 1:
        return values[0]
    return ops.concatenate([ops.reshape(v, (v.size,)) for v in values])


def _set_flat_outputs(graph: Graph, slots: list[tuple[str, Value]], old: Value, new: Any) -> None:
    """The new values of the state `slots` (name, value), `_flat` of which is `old`: `new`
    itself for one slot, else `new`'s slices shaped as the slots' values."""
    if len(slots) == 1:
        _set_output(graph, *slots[0], new)
        return
    if new is old:
        return
    _check_update(f"{slots[0][0]}..{slots[-1][0]}", old, new)
    offset = 0
    for name, value in slots:
        part = ops.reshape(new[offset : offset + value.size], value.shape)
        _set_output(graph, name, value, part)
        offset += value.size


def _set_output(graph: Graph, name: str, old: Value, new: Any) -> None:
    if new is old:
        return
    _check_update(name, old, new)
    graph.outputs[name] = new


def _check_update(name: str, old: Value, new: Any) -> None:
    if not isinstance(new, Value) or new.shape != old.shape or new.dtype != old.dtype:
        found = f"{new.dtype}{list(new.shape)}" if isinstance(new, Value) else repr(new)
        raise TracingError(
            f"the update of {name} must keep {old.dtype}{list(old.shape)}, got {found}"
        )


def _all_finite(grads: Sequence[Operand]) -> Operand:
    """True when no gradient holds an Inf or NaN: x * 0 is 0 for every finite x and NaN for
    the others, and one NaN makes the whole sum NaN."""
    total = sum((g * 0.0).sum() for g in grads)
    return ops.equal(total, 0.0)
