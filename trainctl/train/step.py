"""One definition of "a training step", runnable in eager or graph mode.

The trainer, `compare` and the benchmarks call `make_step(mode, ...)` and then only
`step.train(inputs, targets)` / `step.evaluate(inputs)`, so the two modes are interchangeable
and must leave the model, the optimizer and the generators in the same state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from trainctl.autograd import Tensor, no_grad, ops
from trainctl.backend import Device, to_host
from trainctl.errors import TrainctlError
from trainctl.nn import Module
from trainctl.optim import Optimizer

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
        square = ops.sum(g * g)
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
    ) -> None:
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.device, self.dtype = device, np.dtype(dtype)
        if grad_clip is not None and not grad_clip > 0:
            raise StepError(f"grad_clip must be a number > 0 or null, got {grad_clip!r}")
        self.grad_clip = None if grad_clip is None else float(grad_clip)
        _check_placement(model, device, self.dtype)

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

    def train(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        x = Tensor._wrap(host_to_device(inputs, self.device, self.dtype), self.device)
        y = Tensor._wrap(host_to_device(targets, self.device, self.dtype), self.device)
        self.model.train()
        loss = self.loss_fn(self.model(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        if self.grad_clip is not None:
            with_grad = [p for p in self.optimizer.params if p.grad is not None]
            with no_grad():
                clipped = clip_by_global_norm([p.grad for p in with_grad], self.grad_clip)
            for p, g in zip(with_grad, clipped, strict=True):
                p.grad = g
        self.optimizer.step()
        return float(loss.item())

    def evaluate(self, inputs: np.ndarray) -> np.ndarray:
        x = Tensor._wrap(host_to_device(inputs, self.device, self.dtype), self.device)
        self.model.eval()
        with no_grad():
            out = self.model(x)
        return np.array(out.numpy(), copy=True)


def make_step(
    mode: str,
    model: Module,
    loss_fn: LossFn,
    optimizer: Optimizer,
    *,
    device: Device,
    dtype: np.dtype,
    grad_clip: float | None = None,
) -> Step:
    """The training step of `model` in `mode` ("eager" or "graph")."""
    if mode == "eager":
        cls: type[Step] = EagerStep
    elif mode == "graph":
        raise StepError("mode 'graph' is not available yet: use mode 'eager'")
    else:
        raise StepError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
    return cls(model, loss_fn, optimizer, device=device, dtype=dtype, grad_clip=grad_clip)


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
