"""Softmax, log-softmax, the fused softmax cross entropy and one-hot labels. Graph mode
lowers the first three into their steps (lowering.lower_softmax), so CSE can share them."""

from __future__ import annotations

import numpy as np

from trainctl.autograd import ops
from trainctl.autograd.ops.base import Op, Scratch, Spec, apply, into, one_axis, same
from trainctl.errors import ShapeError


class Softmax(Op):
    onnx = staticmethod(lambda b, inputs, axis: b.op("Softmax", *inputs, axis=axis))

    @staticmethod
    def forward(xp, x, axis, out=None):
        e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
        return xp.divide(e, xp.sum(e, axis=axis, keepdims=True), out=out)

    infer = staticmethod(same)

    @staticmethod
    def vjp(g, out, x, axis):
        return (lambda: out * (g - ops.reduce_sum(g * out, axis, keepdims=True)),)


class LogSoftmax(Op):
    onnx = staticmethod(lambda b, inputs, axis: b.op("LogSoftmax", *inputs, axis=axis))

    @staticmethod
    def forward(xp, x, axis, out=None):
        z = x - xp.max(x, axis=axis, keepdims=True)
        return xp.subtract(z, xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True)), out=out)

    infer = staticmethod(same)

    @staticmethod
    def vjp(g, out, x, axis):
        return (lambda: g - ops.exp(out) * ops.reduce_sum(g, axis, keepdims=True),)


class SoftmaxCrossEntropy(Op):
    """Per-sample -log softmax(logits)[label], fused and stable, with label smoothing.

    With smoothing e the target is (1 - e) * one_hot + e / C, as in PyTorch.
    """

    @staticmethod
    def forward(xp, logits, labels, smoothing, out=None):
        log_probs = LogSoftmax.forward(xp, logits, 1)
        nll = -xp.take_along_axis(log_probs, labels[:, None], axis=1)[:, 0]
        if smoothing:
            nll = (1.0 - smoothing) * nll - smoothing * xp.mean(log_probs, axis=1)
        return into(xp, out, nll)

    @staticmethod
    def infer(logits, labels, smoothing):
        if len(logits.shape) != 2 or tuple(labels.shape) != (logits.shape[0],):
            raise ShapeError(
                f"cross entropy needs (N, C) logits and (N,) labels, "
                f"got {tuple(logits.shape)} and {tuple(labels.shape)}"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise ShapeError(f"cross entropy labels must be integers, got {labels.dtype}")
        return Spec((logits.shape[0],), logits.dtype)

    @staticmethod
    def vjp(g, out, logits, labels, smoothing):
        def grad():
            classes = logits.shape[1]
            target = one_hot(labels, classes, logits.dtype)
            if smoothing:
                target = target * (1.0 - smoothing) + smoothing / classes
            return (softmax(logits, 1) - target) * ops.reshape(g, (logits.shape[0], 1))

        return (grad, None)


class OneHot(Op):
    differentiable = False
    scratch = staticmethod(lambda out, labels, classes, dtype: [Scratch(out.shape, np.dtype(bool))])
    prepare = staticmethod(lambda xp, labels, classes, dtype: {"arange": xp.arange(classes)})

    @staticmethod
    def forward(xp, labels, classes, dtype, out=None, scratch=None, arange=None):
        arange = xp.arange(classes) if arange is None else arange
        hits = xp.equal(labels[..., None], arange, out=scratch[0] if scratch else None)
        return hits.astype(dtype) if out is None else into(xp, out, hits)

    infer = staticmethod(
        lambda labels, classes, dtype: Spec(tuple(labels.shape) + (classes,), dtype)
    )


def softmax(x, axis: int = -1):
    return apply(Softmax, x, axis=one_axis(axis, x.ndim))


def log_softmax(x, axis: int = -1):
    return apply(LogSoftmax, x, axis=one_axis(axis, x.ndim))


def softmax_cross_entropy(logits, labels, smoothing: float = 0.0):
    return apply(SoftmaxCrossEntropy, logits, labels, smoothing=float(smoothing))


def one_hot(labels, classes: int, dtype=np.float32):
    return apply(OneHot, labels, classes=classes, dtype=np.dtype(dtype))
