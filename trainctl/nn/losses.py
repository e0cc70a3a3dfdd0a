"""Loss functions, composed of primitives; `reduction` is "mean", "sum" or "none".

`LOSSES` declares the ones a config can name, with their arguments and the task they serve.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trainctl.autograd import ops
from trainctl.autograd.tensor import Tensor
from trainctl.errors import ShapeError
from trainctl.spec import Arg, Entry

Operand = ops.Operand
REDUCTIONS = ("mean", "sum", "none")


def _reduce(per_element: Operand, reduction: str) -> Operand:
    if reduction == "mean":
        return per_element.mean()
    if reduction == "sum":
        return per_element.sum()
    if reduction == "none":
        return per_element
    raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")


def _as_operand(value: Any, like: Operand, dtype: Any = None) -> Operand:
    """Wrap host data (labels, targets) as a tensor on the device of `like` (eager only)."""
    if isinstance(value, Operand):
        return value
    return Tensor(value, dtype=dtype, device=like.device)


def cross_entropy(
    logits: Operand,
    labels: Any,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> Operand:
    """Softmax cross entropy of (N, C) logits against (N,) integer labels, fused and stable.

    With label smoothing e the target is (1 - e) * one_hot + e / C, as in PyTorch.
    """
    labels = _as_operand(labels, logits)
    # Eager mode runs an op's shape rule only when its forward fails, and this forward
    # broadcasts a single label silently: check the shapes up front in both modes.
    ops.SoftmaxCrossEntropy.infer(logits, labels, label_smoothing)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    return _reduce(ops.softmax_cross_entropy(logits, labels, label_smoothing), reduction)


def sequence_cross_entropy(
    logits: Operand,
    targets: Any,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> Operand:
    """Next-token cross entropy: (B, T, V) logits against (B, T) token ids, averaged over
    every position ("none": per position, (B, T)). The targets are the inputs shifted by
    one, as the text data set gives them."""
    targets = _as_operand(targets, logits)
    if logits.ndim != 3 or tuple(targets.shape) != tuple(logits.shape[:2]):
        raise ShapeError(
            f"sequence_cross_entropy needs (B, T, V) logits and (B, T) targets, "
            f"got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    b, t, v = logits.shape
    per_token = cross_entropy(
        logits.reshape(b * t, v), targets.reshape(b * t), label_smoothing, "none"
    )
    return _reduce(per_token.reshape(b, t), reduction)


def mse_loss(pred: Operand, target: Any, reduction: str = "mean") -> Operand:
    """(pred - target)^2; the shapes must match (no silent broadcasting)."""
    target = _as_operand(target, pred, pred.dtype)
    if tuple(pred.shape) != tuple(target.shape):
        raise ShapeError(
            f"mse_loss: prediction {tuple(pred.shape)} != target {tuple(target.shape)}"
        )
    diff = pred - target
    return _reduce(diff * diff, reduction)


def binary_cross_entropy_with_logits(
    logits: Operand, targets: Any, reduction: str = "mean"
) -> Operand:
    """-y log sigmoid(x) - (1 - y) log(1 - sigmoid(x)) in the stable form
    relu(x) - x*y + log(1 + exp(-|x|)): no exp of a positive number, so no overflow.

    -|x| is written x - 2 relu(x), so both kinks at 0 are one relu's and agree: with
    r = relu'(0) the gradient at 0 is r - y + (1 - 2r) / 2 = sigmoid(0) - y, whatever r is.
    relu and abs each choose their own value at 0, and the two choices need not add up.
    """
    targets = _as_operand(targets, logits, logits.dtype)
    if tuple(logits.shape) != tuple(targets.shape):
        raise ShapeError(
            f"binary_cross_entropy_with_logits: logits {tuple(logits.shape)} != "
            f"targets {tuple(targets.shape)}"
        )
    x, positive_part = logits, ops.relu(logits)
    minus_abs = x - 2.0 * positive_part
    per_element = positive_part - x * targets + ops.log(1.0 + ops.exp(minus_abs))
    return _reduce(per_element, reduction)


@dataclass(frozen=True)
class LossEntry(Entry):
    """A loss a config can name; `task` says what targets it compares the outputs with:
    "classification" (integer labels), "binary" (0/1 targets), "regression" (values) or
    "sequence" (a token id per position).
    `fn(outputs, targets, **args)` computes it, the arguments being the entry's `args`."""

    task: str = "classification"
    fn: Callable[..., Operand] | None = None


_LABEL_SMOOTHING = {
    "label_smoothing": Arg("float", 0.0, "mix 1 - e one-hot with e / classes", low=0, high=1)
}

LOSSES: dict[str, LossEntry] = {
    entry.name: entry
    for entry in (
        LossEntry(
            "cross_entropy",
            _LABEL_SMOOTHING,
            "softmax cross entropy of logits against class labels",
            "classification",
            cross_entropy,
        ),
        LossEntry(
            "sequence_cross_entropy",
            _LABEL_SMOOTHING,
            "next-token cross entropy of (T, V) logits against (T,) token ids per sample",
            "sequence",
            sequence_cross_entropy,
        ),
        LossEntry("mse", {}, "mean squared error against target values", "regression", mse_loss),
        LossEntry(
            "bce_with_logits",
            {},
            "binary cross entropy of logits against 0/1 targets",
            "binary",
            binary_cross_entropy_with_logits,
        ),
    )
}
