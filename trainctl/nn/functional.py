"""Stateless layer math, composed only of the primitives in `autograd.ops`.

Graph mode traces these same functions with symbolic values, so nothing here touches array
data directly: shapes, Python scalars and ops only. Images are NHWC.
"""

from __future__ import annotations

import math
from typing import Any

from trainctl import backend
from trainctl.autograd import ops
from trainctl.autograd.tensor import no_grad
from trainctl.errors import ShapeError

Operand = ops.Operand

CHUNKED_DTYPES = ("float32", "float64")  # the CPU conv op's; low precision keeps im2col


def linear(x: Operand, weight: Operand, bias: Operand | None = None) -> Operand:
    """x @ W + b with W of shape (in_features, out_features)."""
    y = x @ weight
    return y if bias is None else y + bias


def conv2d(
    x: Operand,
    weight: Operand,
    bias: Operand | None = None,
    stride: int = 1,
    padding: int = 0,
) -> Operand:
    """NHWC convolution (cross-correlation) with a (KH, KW, Cin, Cout) weight.

    On the CPU (float32, float64) it is the chunked `conv2d` op (patches made per chunk of
    images, in cache, the bias added there); elsewhere im2col + one GEMM, which cuBLAS runs
    fast on a whole batch and a CUDA graph can capture. docs/engine.md, "Convolutions", says
    why.
    """
    kh, kw, cin, cout = weight.shape
    if x.device.name == "cpu" and str(x.dtype) in CHUNKED_DTYPES:
        return ops.conv2d(x, weight, stride, padding, bias=bias)
    patches = ops.im2col(x, kh, kw, stride, padding)  # (N, OH, OW, KH, KW, Cin)
    n, oh, ow = patches.shape[:3]
    y = patches.reshape(n * oh * ow, kh * kw * cin) @ weight.reshape(kh * kw * cin, cout)
    if bias is not None:
        y = y + bias
    return y.reshape(n, oh, ow, cout)


def max_pool2d(x: Operand, kernel: int, stride: int | None = None) -> Operand:
    return ops.max_pool2d(x, kernel, stride)


def avg_pool2d(x: Operand, kernel: int, stride: int | None = None) -> Operand:
    """Mean over each kernel x kernel window (no padding)."""
    return ops.im2col(x, kernel, kernel, stride or kernel, 0).mean(axis=(3, 4))


def batch_norm(
    x: Operand,
    weight: Operand,
    bias: Operand,
    running_mean: Operand,
    running_var: Operand,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
    across: Any = None,
) -> tuple[Operand, Operand, Operand]:
    """Normalise over every axis but the last (channels); returns (y, new_mean, new_var).

    Training normalises with the batch mean and biased variance and moves the running
    statistics towards the batch's, using the unbiased variance as PyTorch does. Evaluation
    normalises with the running statistics and returns them unchanged. The new statistics
    carry no gradient; the caller rebinds its buffers to them. `across` (data parallelism's
    synchronised BatchNorm: its `mean(operand)` and `size`) makes the batch statistics those
    of every rank's equal shard together, the whole global batch.

    In training the statistics are computed without gradient: `ops.batch_norm_train`'s vjp
    is the derivative of the whole normalisation, their dependence on x included.
    """
    if not training:
        centered = x - running_mean
        return centered / ops.sqrt(running_var + eps) * weight + bias, running_mean, running_var
    count = math.prod(x.shape[:-1])
    if count < 2:
        raise ShapeError(
            f"batch norm in training needs more than 1 value per channel, got {x.shape}"
        )
    with no_grad():
        mean = ops.channel_sum(x) * (1.0 / count)
        if across is not None:
            mean = across.mean(mean)
    centered = ops.channel_center(x, mean)
    with no_grad():
        var = ops.channel_dot(centered, centered) * (1.0 / count)
        if across is not None:
            var, count = across.mean(var), count * across.size
        running_mean = running_mean * (1.0 - momentum) + mean * momentum
        unbiased = var * (count / (count - 1))
        running_var = running_var * (1.0 - momentum) + unbiased * momentum
    y = ops.batch_norm_train(centered, var, weight, bias, eps, across)
    return y, running_mean, running_var


def layer_norm(
    x: Operand,
    weight: Operand | None,
    bias: Operand | None,
    normalized_ndim: int = 1,
    eps: float = 1e-5,
) -> Operand:
    """Normalise over the last `normalized_ndim` axes of each sample (biased variance)."""
    axes = tuple(range(x.ndim - normalized_ndim, x.ndim))
    centered = x - x.mean(axis=axes, keepdims=True)
    var = (centered * centered).mean(axis=axes, keepdims=True)
    y = centered / ops.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def gelu(x: Operand) -> Operand:
    """GELU, tanh approximation (PyTorch's approximate="tanh"): NumPy has no erf, and the two
    differ by less than 1e-3 everywhere."""
    inner = (x + 0.044715 * (x * x * x)) * math.sqrt(2.0 / math.pi)
    return 0.5 * x * (1.0 + ops.tanh(inner))


def leaky_relu(x: Operand, negative_slope: float = 0.01) -> Operand:
    return ops.where(x > 0, x, x * negative_slope)


def dropout(
    x: Operand,
    p: float = 0.5,
    training: bool = True,
    generator: backend.Generator | None = None,
) -> Operand:
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout).

    The mask comes from the generator's next key, so the same seed gives the same mask.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    return ops.dropout(x, p, (generator or backend.default_generator).next_key())


def flatten(x: Operand) -> Operand:
    """(N, ...) -> (N, everything else)."""
    return x.reshape(x.shape[0], -1)


def softmax(x: Operand, axis: int = -1) -> Operand:
    return ops.softmax(x, axis)


def log_softmax(x: Operand, axis: int = -1) -> Operand:
    return ops.log_softmax(x, axis)
