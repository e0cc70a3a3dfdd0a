"""Naming the first non-finite value of a training step: in the batch, in an op, in the state.

Without `debug.check_numerics` the trainer only looks at the loss of every step (a float it
has anyway) and at the tensors it is about to checkpoint, and explains a bad loss afterwards
(`nonfinite_batch`). With it, `EagerNumerics` checks the output of every op as it runs and
`LayerScopes` tells which layer ran it; graph mode gets the same names from the origins its
trace records (see `compile_graph(..., check_numerics=True)`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from trainctl.autograd.graph import Graph
from trainctl.autograd.numerics import (
    NonFiniteError,
    all_finite,
    array_text,
    describe_nonfinite,
    gradient_origin,
)
from trainctl.autograd.ops import Op
from trainctl.autograd.tensor import Tensor, is_grad_enabled, watch_outputs
from trainctl.backend import to_host
from trainctl.nn import Module

LOSS_ORIGIN = "the loss"
UPDATE_ORIGIN = "the gradient clipping and optimizer update"


def layer_label(path: str, module: Module) -> str:
    """The config's name for a submodule: '3' -> 'model.layers[3] (Linear)', and a residual
    block's body '2.body.0' -> 'model.layers[2].layers[0] (Linear)'."""
    text = "model.layers"
    for part in path.split("."):
        text += f"[{part}]" if part.isdigit() else ".layers" if part == "body" else f".{part}"
    return f"{text} ({type(module).__name__})"


def parameter_label(name: str, model: Module) -> str:
    """'3.weight' -> '3.weight (model.layers[3] (Linear))', for messages about state."""
    path = name.rpartition(".")[0]
    modules = dict(model.named_modules())
    return f"{name} ({layer_label(path, modules[path])})" if path in modules and path else name


class LayerScopes:
    """Which layer is running: every submodule's forward is wrapped to keep `current` (and,
    while a trace records origins, the traced graph's `origin`) set to the layer's label.

    Only made for `debug.check_numerics` and for naming a graph's nodes by layer (`label`
    makes the names; `remove()` puts the plain forwards back); otherwise a model keeps its
    plain forwards.
    """

    def __init__(self, model: Module, label: Callable[[str, Module], str] = layer_label) -> None:
        self.current = ""
        self.graph: Graph | None = None
        self._wrapped: list[tuple[Module, Any]] = []  # (module, the forward it had as its own)
        for path, module in model.named_modules():
            if path:
                self._wrap(module, label(path, module))

    def remove(self) -> None:
        """Unwrap every forward this wrapped, back to what it was (another LayerScopes' wrapper,
        as check_numerics leaves, or the class's own)."""
        for module, previous in reversed(self._wrapped):
            if previous is None:
                module.__dict__.pop("forward", None)
            else:
                object.__setattr__(module, "forward", previous)
        self._wrapped.clear()

    def _wrap(self, module: Module, label: str) -> None:
        forward = module.forward
        self._wrapped.append((module, module.__dict__.get("forward")))

        def scoped(*args: Any, **kwargs: Any) -> Any:
            outer = self.current
            self._enter(label)
            try:
                return forward(*args, **kwargs)
            finally:
                self._enter(outer)

        object.__setattr__(module, "forward", scoped)  # an instance attribute, not a member

    def _enter(self, label: str) -> None:
        self.current = label
        if self.graph is not None:
            self.graph.origin = label

    @contextlib.contextmanager
    def recording(self, graph: Graph) -> Iterator[None]:
        """Record in `graph.origins` where each value traced meanwhile came from."""
        graph.origins = {} if graph.origins is None else graph.origins
        self.graph = graph
        try:
            yield
        finally:
            self.graph = None


class EagerNumerics:
    """`debug.check_numerics` in eager mode: each op's output is checked as the op returns,
    and the first one with NaN or Inf raises a NonFiniteError naming the op, its shape and
    where it ran (a layer, the loss, the backward pass of an op, or the update)."""

    def __init__(self, model: Module, xp: Any) -> None:
        self.scopes = LayerScopes(model)
        self.xp = xp
        self.origins: dict[int, str] = {}  # id(forward output array) -> where it was made

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        self.origins.clear()
        try:
            with watch_outputs(self._check):
                yield
        finally:
            self.origins.clear()

    def _check(self, op: type[Op], out: Any, grad_of: Tensor | None) -> None:
        if grad_of is not None:
            forward_op = grad_of._ctx[0].name
            where = gradient_origin(forward_op, self.origins.get(id(grad_of.data), ""))
        else:
            where = self.scopes.current or (LOSS_ORIGIN if is_grad_enabled() else UPDATE_ORIGIN)
            self.origins[id(out)] = where
        # Views only move values: the check fires where a value was made.
        if op.kind != "view" and not all_finite(self.xp, out):
            raise NonFiniteError(
                f"non-finite values ({describe_nonfinite(out)}) in the output of {op.name}, "
                f"{array_text(out)}, in {where}"
            )


def nonfinite_batch(inputs: Any, targets: Any) -> str | None:
    """What is non-finite in a batch ('the inputs of sample 3 of the batch of 32: 1 NaN among
    64 values'), or None when it is all finite. Targets may be None (evaluation); integer
    labels are always finite."""
    for kind, array in (("inputs", inputs), ("targets", targets)):
        if array is None:
            continue
        host = np.asarray(to_host(array))
        if all_finite(np, host):
            continue
        per_sample = host.reshape(len(host), -1)
        sample = int(np.flatnonzero(~np.isfinite(per_sample).all(axis=1))[0])
        return (
            f"the {kind} of sample {sample} of the batch of {len(host)}: "
            f"{describe_nonfinite(per_sample[sample])}"
        )
    return None


def check_batch(inputs: Any, targets: Any) -> None:
    """NonFiniteError when the batch holds NaN or Inf (check_numerics checks it first)."""
    found = nonfinite_batch(inputs, targets)
    if found is not None:
        raise NonFiniteError(f"non-finite values in the batch: {found}")


def first_nonfinite(named: Iterable[tuple[str, Any]]) -> tuple[str, str] | None:
    """(name, description) of the first array with NaN or Inf among (name, array) pairs."""
    for name, array in named:
        host = np.asarray(to_host(array))
        if not all_finite(np, host):
            return name, f"{describe_nonfinite(host)}, {array_text(host)}"
    return None
