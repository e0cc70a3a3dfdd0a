"""One definition of "a training step", runnable in eager or graph mode.

The trainer, `compare` and the benchmarks call `make_step(mode, ...)` and then only
`step.train(inputs, targets)` / `step.evaluate(inputs)`, so the two modes are interchangeable
and must leave the model, the optimizer and the generators in the same state. What a step
computes is `autograd.step_graph.StepDefinition`; graph mode is the engine's
`autograd.jit.TracedStep`; this module adds what is the trainer's: checking the batch and
naming layers the way the config does, under `check_numerics`.

`check_numerics=True` (`debug.check_numerics`) checks the batch, then every op's output
(eager) or every node's (graph), and stops at the first NaN or Inf with a NonFiniteError
naming it; without it nothing is checked and nothing is paid.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainctl.autograd import Tensor, no_grad
from trainctl.autograd.jit import TracedStep
from trainctl.autograd.step_graph import (
    LossFn,
    StepDefinition,
    StepError,
    StepOptions,
    clip_by_global_norm,
    model_output,
)
from trainctl.backend import Device, to_host
from trainctl.nn import Module
from trainctl.optim import Optimizer
from trainctl.train.numerics import EagerNumerics, LayerScopes, check_batch

MODES = ("eager", "graph")


def host_to_device(array: Any, device: Device, dtype: np.dtype) -> Any:
    """A batch array on `device`; floating data is cast to `dtype`, labels keep their dtype."""
    array = np.asarray(to_host(array)) if not hasattr(array, "dtype") else array
    floating = np.issubdtype(array.dtype, np.floating)
    return device.asarray(array, dtype=dtype if floating else None)


class Step:
    """What the trainer calls once per batch; EagerStep and GraphStep share this interface."""

    traces: int = 0
    # Data parallelism (trainctl.distributed) sets it before the first step: its
    # `reduce(loss, grads)` averages both over the ranks, between backward and the update.
    gradient_reducer: Any = None

    def __init__(
        self,
        model: Module,
        loss_fn: LossFn,
        optimizer: Optimizer,
        *,
        device: Device,
        dtype: np.dtype,
        options: StepOptions | None = None,
    ) -> None:
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.device, self.dtype = device, np.dtype(dtype)
        self.options = options or StepOptions()
        _check_placement(model, device, self.dtype)
        self.definition = StepDefinition(
            model, loss_fn, optimizer, device, self.dtype, self.options
        )

    def train(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        """Forward in train mode, loss, backward, clipping, update; returns the loss."""
        raise NotImplementedError

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
        checking = self.options.check_numerics
        self.numerics = EagerNumerics(self.model, self.device.xp) if checking else None

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
        loss = self.definition.loss(self.model(x), y)
        self.optimizer.zero_grad()
        scaler = self.options.loss_scaler
        if scaler is None:
            loss.backward()
        else:
            scalars = scaler.step_scalars()
            (loss * scalars["loss_scale"]).backward()
        with_grad = [p for p in self.optimizer.params if p.grad is not None]
        if self.gradient_reducer is not None:
            with no_grad():
                loss, grads = self.gradient_reducer.reduce(loss, [p.grad for p in with_grad])
            for p, g in zip(with_grad, grads, strict=True):
                p.grad = g
        finite = True
        if scaler is not None:
            with no_grad():
                for p in with_grad:
                    p.grad = p.grad * scalars["inverse_loss_scale"]
            xp = self.device.xp
            finite = all(bool(xp.isfinite(p.grad.data).all()) for p in with_grad)
        if self.options.grad_clip is not None:
            with no_grad():
                clipped = clip_by_global_norm([p.grad for p in with_grad], self.options.grad_clip)
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
            out = model_output(self.model, self.model(x), self.dtype)
        return np.array(out.numpy(), copy=True)


class GraphStep(Step):
    """The step traced once per input signature, optimized, compiled and replayed by the
    engine (`autograd.jit.TracedStep`, its `traced` attribute)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.options.check_numerics:
            self.definition.scopes = LayerScopes(self.model)
        self.traced = TracedStep(self.definition, self._eager_step)

    def _eager_step(self) -> EagerStep:
        """The eager step that runs what graph mode cannot replay (guards past max_traces)."""
        eager = EagerStep(
            self.model, self.loss_fn, self.optimizer,
            device=self.device, dtype=self.dtype, options=self.options,
        )  # fmt: skip
        eager.gradient_reducer = self.gradient_reducer
        return eager

    @property
    def traces(self) -> int:
        return self.traced.traces

    @property
    def gradient_reducer(self) -> Any:
        return self.definition.gradient_reducer

    @gradient_reducer.setter
    def gradient_reducer(self, reducer: Any) -> None:
        self.definition.gradient_reducer = reducer

    def train(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        if self.options.check_numerics:
            check_batch(inputs, targets)
        return self.traced.train(inputs, targets)

    def evaluate(self, inputs: np.ndarray) -> np.ndarray:
        if self.options.check_numerics:
            check_batch(inputs, None)
        return self.traced.evaluate(inputs)

    def stats(self) -> dict[str, Any]:
        """Trace and compile seconds, node counts before/after each pass, buffers and bytes."""
        return self.traced.stats()


def make_step(
    mode: str,
    model: Module,
    loss_fn: LossFn,
    optimizer: Optimizer,
    *,
    device: Device,
    dtype: np.dtype,
    **options: Any,
) -> Step:
    """The training step of `model` in `mode` ("eager" or "graph"); `options` are the
    fields of `StepOptions` (grad_clip, check_numerics, loss_scaler, disabled_passes...)."""
    steps = {"eager": EagerStep, "graph": GraphStep}
    if mode not in steps:
        raise StepError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
    return steps[mode](
        model, loss_fn, optimizer, device=device, dtype=dtype, options=StepOptions(**options)
    )


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
