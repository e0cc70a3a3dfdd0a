"""Losses against direct NumPy formulas, reductions, stability and gradients."""

import warnings

import numpy as np
import pytest
from gradcheck import gradcheck

from trainctl import nn
from trainctl.autograd import Tensor
from trainctl.errors import ShapeError

RNG = np.random.default_rng(0)
LOGITS = RNG.standard_normal((6, 4)) * 3
LABELS = np.array([0, 3, 1, 1, 2, 0])


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _reduce(values, reduction):
    return {"mean": values.mean(), "sum": values.sum(), "none": values}[reduction]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_matches_numpy(reduction, smoothing, device):
    logp = _log_softmax(LOGITS)
    nll = -logp[np.arange(6), LABELS]
    per_sample = (1 - smoothing) * nll - smoothing * logp.mean(axis=1)
    loss = nn.cross_entropy(
        Tensor(LOGITS, device=device), Tensor(LABELS, device=device), smoothing, reduction
    )
    np.testing.assert_allclose(loss.numpy(), _reduce(per_sample, reduction), rtol=1e-12)


def test_cross_entropy_accepts_host_labels_and_checks_them():
    logits = Tensor(LOGITS.astype(np.float32))
    assert nn.cross_entropy(logits, LABELS).dtype == np.float32
    assert nn.cross_entropy(logits, list(LABELS)).shape == ()
    with pytest.raises(ShapeError, match=r"got \(6, 4\) and \(3,\)"):
        nn.cross_entropy(logits, LABELS[:3])
    with pytest.raises(ShapeError, match="integers"):
        nn.cross_entropy(logits, LABELS.astype(np.float32))
    with pytest.raises(ShapeError, match=r"got \(6, 4\) and \(1,\)"):  # would broadcast
        nn.cross_entropy(logits, LABELS[:1])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_matches_numpy(reduction):
    pred, target = RNG.standard_normal((3, 5)), RNG.standard_normal((3, 5))
    loss = nn.mse_loss(Tensor(pred), target, reduction)
    np.testing.assert_allclose(loss.numpy(), _reduce((pred - target) ** 2, reduction), rtol=1e-12)
    with pytest.raises(ShapeError, match="mse_loss"):
        nn.mse_loss(Tensor(pred), target[:, :1])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_with_logits_matches_naive_formula(reduction):
    x, y = RNG.standard_normal((4, 3)) * 2, RNG.uniform(0, 1, (4, 3))
    p = 1 / (1 + np.exp(-x))
    expected = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    loss = nn.binary_cross_entropy_with_logits(Tensor(x), Tensor(y), reduction)
    np.testing.assert_allclose(loss.numpy(), _reduce(expected, reduction), rtol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_with_logits_is_stable_at_large_logits(dtype):
    x = Tensor(np.array([100.0, -100.0, 100.0, -100.0], dtype), requires_grad=True)
    y = np.array([0.0, 1.0, 1.0, 0.0])
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        loss = nn.binary_cross_entropy_with_logits(x, y, "none")
        loss.sum().backward()
    np.testing.assert_allclose(loss.numpy(), [100, 100, 0, 0], atol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), [1, -1, 0, 0], atol=1e-6)
    assert loss.dtype == dtype


# Exactly at the kink of the stable form (0, -0.0), next to it, and far out on both sides.
BCE_LOGITS = np.array([0.0, -0.0, 1e-30, -1e-30, 1e-3, -1e-3, 0.7, -2.5, 30.0, -30.0, 80.0, -80.0])
BCE_TARGETS = np.array([1.0, 0.0, 1.0, 0.0, 0.3, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_bce_with_logits_gradient_is_sigmoid_minus_target_everywhere(reduction, dtype, device):
    x = Tensor(BCE_LOGITS.astype(dtype), device=device, requires_grad=True)
    loss = nn.binary_cross_entropy_with_logits(x, BCE_TARGETS, reduction)
    loss.sum().backward()
    with np.errstate(under="ignore"):
        sigmoid = np.exp(-np.logaddexp(0.0, -BCE_LOGITS))
    scale = 1 / BCE_LOGITS.size if reduction == "mean" else 1.0
    want = (sigmoid - BCE_TARGETS) * scale
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-6, atol=np.finfo(dtype).eps * scale)


def test_bce_with_logits_gradcheck_near_and_far_from_zero():
    logits = Tensor(np.concatenate([BCE_LOGITS[4:], [1e-2, -5e-3, 4.0]]), requires_grad=True)
    targets = np.concatenate([BCE_TARGETS[4:], [0.5, 0.0, 1.0]])
    assert gradcheck(lambda: nn.binary_cross_entropy_with_logits(logits, targets), [logits]) < 1e-6


def test_unknown_reduction_is_rejected():
    with pytest.raises(ValueError, match="reduction"):
        nn.mse_loss(Tensor(np.ones(2)), np.ones(2), "average")


def test_loss_gradients(device):
    logits = Tensor(LOGITS, device=device, requires_grad=True)
    labels = Tensor(LABELS, device=device)
    targets = Tensor(RNG.uniform(0, 1, (6, 4)), device=device)

    def cross_entropy():
        return nn.cross_entropy(logits, labels, 0.2, "none")

    def mse():
        return nn.mse_loss(logits, targets, "sum")

    def bce():
        return nn.binary_cross_entropy_with_logits(logits, targets)

    for fn in (cross_entropy, mse, bce):
        assert gradcheck(fn, [logits]) < 1e-6, fn.__name__
