"""Metrics against their definitions on small hand-checked arrays."""

import numpy as np
import pytest

from trainctl.metrics import (
    METRICS,
    accuracy,
    confusion_matrix,
    higher_is_better,
    mae,
    metric_label,
    mse,
    perplexity,
    r2,
    top_k_accuracy,
)

LOGITS = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.5, 0.0, 0.4], [0.0, 0.1, 0.2]])
LABELS = np.array([0, 1, 2, 2])


def test_accuracy_counts_argmax_hits():
    assert accuracy(LOGITS, LABELS) == 0.75


def test_accuracy_of_binary_logit_column_thresholds_at_zero():
    logits = np.array([[1.0], [-2.0], [0.5], [-0.1]])
    targets = np.array([[1.0], [0.0], [0.0], [0.0]])
    assert accuracy(logits, targets) == 0.75


def test_accuracy_accepts_one_hot_targets():
    assert accuracy(LOGITS, np.eye(3)[LABELS]) == 0.75


@pytest.mark.parametrize(("k", "expected"), [(1, 0.75), (2, 1.0), (3, 1.0)])
def test_top_k_accuracy(k, expected):
    assert top_k_accuracy(LOGITS, LABELS, k) == expected


def test_top_k_of_two_misses_the_lowest_logit():
    # sample 2: logits (0.5, 0.0, 0.4), label 1 is the smallest
    assert top_k_accuracy(LOGITS, np.array([0, 1, 1, 2]), 2) == 0.75


def test_regression_errors():
    pred = np.array([[1.0], [2.0], [4.0]])
    true = np.array([[1.0], [3.0], [2.0]])
    assert mse(pred, true) == pytest.approx((0 + 1 + 4) / 3)
    assert mae(pred, true) == pytest.approx((0 + 1 + 2) / 3)
    assert r2(pred, true) == pytest.approx(1 - 5 / (((true - 2) ** 2).sum()))
    assert r2(true, true) == 1.0


def test_confusion_matrix_rows_are_true_labels():
    matrix = confusion_matrix(LOGITS, LABELS, 3)
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert matrix.sum() == len(LABELS)


def test_labels_and_directions():
    assert metric_label("top_k_accuracy", {"k": 3}) == "top_3_accuracy"
    assert higher_is_better("top_3_accuracy") and higher_is_better("accuracy")
    assert not higher_is_better("loss") and not higher_is_better("mse")
    assert not higher_is_better("perplexity")
    assert {"accuracy", "top_k_accuracy", "perplexity", "mse", "mae", "r2"} == set(METRICS)


def test_perplexity_is_exp_of_the_mean_cross_entropy():
    z = LOGITS - LOGITS.max(axis=1, keepdims=True)
    nll = -(z - np.log(np.exp(z).sum(axis=1, keepdims=True)))[np.arange(4), LABELS]
    assert perplexity(LOGITS, LABELS) == pytest.approx(np.exp(nll.mean()), rel=1e-12)
    assert perplexity(np.zeros((4, 3)), LABELS) == pytest.approx(3.0)  # uniform: the vocabulary


def test_sequence_metrics_count_every_position():
    """(N, T, V) outputs and (N, T) targets score as N * T separate tokens."""
    sequences, tokens = LOGITS.reshape(2, 2, 3), LABELS.reshape(2, 2)
    assert accuracy(sequences, tokens) == accuracy(LOGITS, LABELS)
    assert top_k_accuracy(sequences, tokens, 2) == top_k_accuracy(LOGITS, LABELS, 2)
    assert perplexity(sequences, tokens) == perplexity(LOGITS, LABELS)
    assert (
        confusion_matrix(sequences, tokens, 3).tolist()
        == confusion_matrix(LOGITS, LABELS, 3).tolist()
    )
