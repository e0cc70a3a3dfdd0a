"""Kernels: the ops that only lowering passes create.

A kernel has a name, a shape rule and an allocating `forward` (what runs when buffer planning
is off), but no vjp: it appears after autodiff, so `ops` keeps exactly one definition per
primitive and both modes differentiate the same ones. compile.py emits each kernel as a few
allocation-free array calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainctl import backend
from trainctl.autograd import ops
from trainctl.autograd.ops import Spec


class Kernel:
    """An op that only lowering creates: a name, a shape rule, an allocating `forward` and an
    `elementwise` flag (fusion may merge it into a chain)."""

    differentiable = False

    def __init__(
        self,
        name: str,
        infer: Callable[..., Spec],
        forward: Callable[..., Any] | None = None,
        elementwise: bool = False,
    ) -> None:
        self.name, self.infer, self.forward, self.elementwise = name, infer, forward, elementwise

    def __repr__(self) -> str:
        return f"Kernel({self.name})"


def _flat_index(xp, labels, classes):
    return labels + xp.arange(labels.shape[0], dtype=labels.dtype) * classes


def _sub_at(xp, x, index):
    out = x.copy()
    flat = out.reshape(-1)
    flat[index] -= 1
    return out


UNIFORM = Kernel(  # uniform [0, 1) draws for a key (dropout's mask, drawn once per key)
    "uniform",
    lambda key, shape, dtype: Spec(shape, dtype),
    lambda xp, key, shape, dtype: backend.uniform(xp, key, shape, dtype),
)
FLAT_INDEX = Kernel(  # labels[i] + i * classes: where each sample's label sits in (N*C,)
    "flat_index",
    lambda labels, classes: Spec(tuple(labels.shape), labels.dtype),
    _flat_index,
)
PICK = Kernel(  # out[i] = x[i, labels[i]], through flat indices
    "pick",
    lambda x, index: Spec(tuple(index.shape), x.dtype),
    lambda xp, x, index: xp.take(x.reshape(-1), index),
)
SUB_AT = Kernel(  # x - one_hot(labels): one subtraction per row
    "sub_at", lambda x, index: Spec(tuple(x.shape), x.dtype), _sub_at
)
MEAN = Kernel(  # NumPy's mean: a sum, then one division by the count (not a multiply)
    "mean",
    lambda x, axes, keepdims: Spec(ops._reduced(tuple(x.shape), axes, keepdims), x.dtype),
    lambda xp, x, axes, keepdims: xp.mean(x, axis=axes, keepdims=keepdims),
)
COMPARISONS = {"greater": "greater", "greater_equal": "greater_equal", "equal": "equal"}


def _select(xp, x, y, a, compare):
    return xp.where(getattr(xp, COMPARISONS[compare])(x, y), a, 0)


SELECT = Kernel(  # where(compare(x, y), a, 0): ReLU's and maximum's backward, as a bit mask
    "select",
    lambda x, y, a, compare: Spec(tuple(a.shape), a.dtype),
    _select,
    elementwise=True,
)
FUSED = Kernel(  # a chain of elementwise nodes (attribute `body`) computed as one
    "fused", lambda *xs, body: Spec(body[-1].out.shape, body[-1].out.dtype), elementwise=True
)
LOOP = Kernel(  # an elementwise chain (attribute `body`) compiled into one Numba loop (NumPy)
    "loop", lambda *xs, body: Spec(body[-1].out.shape, body[-1].out.dtype)
)


def body_of(node: Any) -> tuple:
    """The members a node computes: a fused chain's or a loop's body, else the node itself."""
    return node.attrs.get("body", (node,))


VIEW_OPS = frozenset({"reshape", "transpose", "broadcast_to", "getitem"})
ELEMENTWISE = frozenset(
    {
        "add", "sub", "mul", "div", "maximum", "greater", "greater_equal", "equal", "where",
        "neg", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "abs", "pow", "cast", "select",
    }
)  # fmt: skip
