"""Evaluation metrics over a whole split, computed on the host from outputs and targets.

Outputs are what the model returns: (N, C) logits for classification (a single column is
a binary logit), (N, T, V) logits for sequences of tokens, (N, T) predictions for
regression. Targets are (N,) integer labels, (N, T) token ids, or (N, T) values. Every
metric returns a Python float.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainctl.spec import Arg, Entry


@dataclass(frozen=True)
class MetricEntry(Entry):
    fn: Callable[..., float] | None = None
    higher_is_better: bool = True
    task: str = "classification"  # "classification" or "regression"


def token_rows(outputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sequence outputs (N, T, V) and targets (N, T) as N * T rows of one token each; other
    outputs and targets as they are."""
    if outputs.ndim == 3:
        return outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1)
    return outputs, targets


def predicted_classes(outputs: np.ndarray) -> np.ndarray:
    """Class indices from logits; one column means a binary logit (class 1 when > 0)."""
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        return (outputs[:, 0] > 0).astype(np.int64)
    return outputs.argmax(axis=1)


def _labels(targets: np.ndarray) -> np.ndarray:
    """Integer labels from labels, one-hot rows or a (N, 1) column of 0/1 values."""
    if targets.ndim == 2 and targets.shape[1] > 1:
        return targets.argmax(axis=1)
    return targets.reshape(len(targets)).astype(np.int64)


def accuracy(outputs: np.ndarray, targets: np.ndarray) -> float:
    outputs, targets = token_rows(outputs, targets)
    return float((predicted_classes(outputs) == _labels(targets)).mean())


def top_k_accuracy(outputs: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Fraction of samples whose label is among the k largest logits."""
    outputs, targets = token_rows(outputs, targets)
    k = min(k, outputs.shape[1])
    top = np.argpartition(-outputs, k - 1, axis=1)[:, :k]
    return float((top == _labels(targets)[:, None]).any(axis=1).mean())


def perplexity(outputs: np.ndarray, targets: np.ndarray) -> float:
    """exp of the mean cross entropy per sample (per token for sequences), in float64."""
    logits, labels = token_rows(outputs.astype(np.float64), targets)
    z = logits - logits.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    nll = -log_probs[np.arange(len(labels)), _labels(labels)]
    return float(np.exp(nll.mean()))


def _as_predictions(outputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    targets = targets.reshape(outputs.shape).astype(np.float64)
    return outputs.astype(np.float64), targets


def mse(outputs: np.ndarray, targets: np.ndarray) -> float:
    pred, true = _as_predictions(outputs, targets)
    return float(np.mean((pred - true) ** 2))


def mae(outputs: np.ndarray, targets: np.ndarray) -> float:
    pred, true = _as_predictions(outputs, targets)
    return float(np.mean(np.abs(pred - true)))


def r2(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Coefficient of determination, averaged over target columns (1 is perfect)."""
    pred, true = _as_predictions(outputs, targets)
    residual = ((true - pred) ** 2).sum(axis=0)
    total = ((true - true.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_column = np.where(total > 0, 1.0 - residual / total, np.where(residual > 0, 0.0, 1.0))
    return float(per_column.mean())


def confusion_matrix(outputs: np.ndarray, targets: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) counts: row = true label, column = predicted label."""
    outputs, targets = token_rows(outputs, targets)
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (_labels(targets), predicted_classes(outputs)), 1)
    return matrix


METRICS: dict[str, MetricEntry] = {
    m.name: m
    for m in (
        MetricEntry("accuracy", {}, "fraction of samples classified correctly", accuracy),
        MetricEntry(
            "top_k_accuracy",
            {"k": Arg("int", 5, "how many of the highest logits count", low=1)},
            "fraction of samples whose label is among the k highest logits",
            top_k_accuracy,
        ),
        MetricEntry(
            "perplexity",
            {},
            "exp of the mean cross entropy per token (per sample)",
            perplexity,
            False,
        ),
        MetricEntry("mse", {}, "mean squared error", mse, False, "regression"),
        MetricEntry("mae", {}, "mean absolute error", mae, False, "regression"),
        MetricEntry("r2", {}, "coefficient of determination", r2, True, "regression"),
    )
}


def compute_metric(name: str, args: dict[str, Any], outputs: np.ndarray, targets: np.ndarray):
    entry = METRICS[name]
    return entry.fn(outputs, targets, **args)


def metric_label(name: str, args: dict[str, Any]) -> str:
    """The key a metric is logged under: `accuracy`, `top_3_accuracy`."""
    if name == "top_k_accuracy":
        return f"top_{args.get('k', 5)}_accuracy"
    return name


def higher_is_better(label: str) -> bool:
    """Direction of a logged metric label (`loss` and errors go down)."""
    if label.startswith("top_") and label.endswith("_accuracy"):
        return True
    entry = METRICS.get(label)
    return entry.higher_is_better if entry else False
