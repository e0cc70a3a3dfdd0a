"""Batch normalisation's primitives: per-channel sums over every axis but the last, and the
training-mode normalisation whose vjp is the whole derivative (PyTorch's batch_norm_backward).

Composed of generic ops, training BatchNorm cost about 20 passes over the activation per step
(a sum over three axes alone is 10x a BLAS pass) and its backward as many again; here the
sums are one BLAS matrix-vector product or one einsum each, and the per-channel scale and
shift run over rows of many channels at once (see `_rows`).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from trainctl.autograd import chunk_threads, norm_loops, ops
from trainctl.autograd.ops.base import Op, Spec, apply, dtype_of, empty, into, same
from trainctl.errors import ShapeError

# Rows of about this many elements for the per-channel products: NumPy broadcasts a (C,)
# vector over (N*H*W, C) with an inner loop of only C elements; a vector tiled to a row of
# ~16k makes it nearly a plain pass (measured at 128x32x32x32, 1 thread: a plain multiply
# 0.65 ms, broadcast 1.7 ms, tiled to rows of 4096 1.34 ms, of 16384 0.93 ms).
_ROW = 16384


@functools.lru_cache(maxsize=256)
def _tiles(rows: int, channels: int) -> int:
    """How many channel vectors a row of `_rows` holds: the largest divisor of `rows` that
    keeps a row within `_ROW` elements (1 when the channels alone fill it)."""
    for tiles in range(max(_ROW // channels, 1), 0, -1):
        if rows % tiles == 0:
            return tiles
    return 1


def _rows(xp, x, vector):
    """`x` as rows of whole channel vectors, and `vector` (C,) tiled to one such row."""
    channels = x.shape[-1]
    tiles = _tiles(x.size // channels, channels)
    return x.reshape(-1, tiles * channels), xp.tile(vector, tiles)


def _channels_check(x, *vectors):
    for v in vectors:
        if len(x.shape) < 1 or tuple(v.shape) != (x.shape[-1],):
            raise ShapeError(f"per-channel vector {tuple(v.shape)} for input {tuple(x.shape)}")


class ChannelSum(Op):
    """The sum over every axis but the last: on NumPy a vector of ones times x as (rows, C),
    one BLAS matrix-vector product (NumPy's reduce over three leading axes is ~10x slower)."""

    @staticmethod
    def prepare(xp, x):
        return {"ones": xp.ones(math.prod(x.shape[:-1]), dtype=x.dtype)} if xp is np else {}

    @staticmethod
    def forward(xp, x, out=None, ones=None):
        channels = x.shape[-1]
        rows = x.reshape(x.size // channels, channels)
        if xp is not np:  # CuPy: a reduction kernel, which a CUDA graph can capture
            return xp.sum(rows, axis=0, out=out)
        ones = xp.ones(len(rows), dtype=x.dtype) if ones is None else ones
        with chunk_threads.one_blas_thread(xp, rows.size):
            return xp.matmul(ones, rows, out=out)

    @staticmethod
    def infer(x):
        if len(x.shape) < 2:
            raise ShapeError(f"a per-channel sum needs at least 2 axes, got {tuple(x.shape)}")
        return Spec((x.shape[-1],), x.dtype)

    @staticmethod
    def vjp(g, out, x):
        return (lambda: ops.broadcast_to(g, tuple(x.shape)),)


class ChannelCenter(Op):
    """x minus a per-channel vector (BatchNorm's batch mean): one Numba loop on large NumPy
    arrays (`norm_loops`), else over rows of many channels (see `_rows`); in place when x dies."""

    overwrites = frozenset({0})

    @staticmethod
    def forward(xp, x, mean, out=None):
        out = empty(xp, x) if out is None else out
        if norm_loops.runs_loop(xp, x, mean, out):
            norm_loops.subtract(x, mean, out)
            return out
        rows, mean_row = _rows(xp, x, mean)
        return xp.subtract(rows, mean_row, out=out.reshape(rows.shape)).reshape(out.shape)

    @staticmethod
    def infer(x, mean):
        _channels_check(x, mean)
        return Spec(tuple(x.shape), dtype_of(x, mean))

    @staticmethod
    def vjp(g, out, x, mean):
        return (lambda: g, lambda: -channel_sum(g))


class ChannelDot(Op):
    """The sum of a * b over every axis but the last, without the product's temporary."""

    @staticmethod
    def forward(xp, a, b, out=None):
        if norm_loops.runs_dot_loop(xp, a, b, out):
            out = xp.empty(a.shape[-1], a.dtype) if out is None else out
            norm_loops.dot(a, b, out)
            return out
        channels = a.shape[-1]
        a2, b2 = a.reshape(-1, channels), b.reshape(-1, channels)
        if xp is not np:  # CuPy's einsum takes no out= and may call cuBLAS: a product, a sum
            return into(xp, out, xp.sum(a2 * b2, axis=0))
        return xp.einsum("ij,ij->j", a2, b2, out=out)

    @staticmethod
    def infer(a, b):
        if len(a.shape) < 2 or tuple(a.shape) != tuple(b.shape):
            raise ShapeError(f"a per-channel dot needs equal shapes, got {a.shape} and {b.shape}")
        return Spec((a.shape[-1],), dtype_of(a, b))

    @staticmethod
    def vjp(g, out, a, b):
        return (lambda: b * g, lambda: a * g)


class BatchNormTrain(Op):
    """Training-mode batch norm of `centered` (x minus its batch mean), given its batch
    variance `var`: centered / sqrt(var + eps) * weight + bias, per channel (last axis).

    The vjp is the derivative of the whole normalisation with the batch mean and variance as
    functions of x (so `var`, computed without gradient, gets none of its own):
    dx = w r (g - mean(g) - c r^2 mean(g c)) with r = 1 / sqrt(var + eps). `across` (data
    parallelism's synchronised BatchNorm) takes those two means over the whole global batch.
    """

    overwrites = frozenset({0})

    @staticmethod
    def forward(xp, centered, var, weight, bias, eps, across=None, out=None):
        scale = weight / xp.sqrt(var + eps)
        out = empty(xp, centered) if out is None else out
        if norm_loops.runs_loop(xp, centered, scale, bias, out):
            norm_loops.scale_shift(centered, scale, bias, out)
            return out
        rows, scale_row = _rows(xp, centered, scale)
        out_rows, bias_row = _rows(xp, out, bias)
        xp.multiply(rows, scale_row, out=out_rows)
        return xp.add(out_rows, bias_row, out=out_rows).reshape(out.shape)

    @staticmethod
    def infer(centered, var, weight, bias, eps, across=None):
        _channels_check(centered, var, weight, bias)
        return same(centered)

    @staticmethod
    def vjp(g, out, centered, var, weight, bias, eps, across=None):
        rows = math.prod(centered.shape[:-1])
        r = 1.0 / ops.sqrt(var + eps)

        @functools.cache
        def sums():  # sum(g) and sum(g * centered), shared by the three gradients
            return channel_sum(g), channel_dot(g, centered)

        def centered_grad():
            mean_g, mean_gc = (s * (1.0 / rows) for s in sums())
            if across is not None:
                mean_g, mean_gc = across.mean(mean_g), across.mean(mean_gc)
            return batch_norm_train_grad(g, centered, mean_g, r * r * mean_gc, weight * r)

        return (
            centered_grad,
            None,
            lambda: sums()[1] * r,
            lambda: sums()[0],
        )


class BatchNormTrainGrad(Op):
    """(g - mean_g - centered * k) * a per channel: BatchNormTrain's input gradient, four
    passes over rows of many channels (see `_rows`) instead of broadcast ufunc calls."""

    differentiable = False

    @staticmethod
    def forward(xp, g, centered, mean_g, k, a, out=None):
        out = empty(xp, g) if out is None else out
        if norm_loops.runs_loop(xp, g, centered, mean_g, k, a, out):
            norm_loops.input_grad(g, centered, mean_g, k, a, out)
            return out
        out_rows, k_row = _rows(xp, out, k)
        c_rows, mean_row = _rows(xp, centered, mean_g)
        g_rows, a_row = _rows(xp, g, a)
        xp.multiply(c_rows, k_row, out=out_rows)
        xp.subtract(g_rows, out_rows, out=out_rows)
        xp.subtract(out_rows, mean_row, out=out_rows)
        return xp.multiply(out_rows, a_row, out=out_rows).reshape(out.shape)

    @staticmethod
    def infer(g, centered, mean_g, k, a):
        _channels_check(g, mean_g, k, a)
        return same(g)


def channel_sum(x):
    return apply(ChannelSum, x)


def channel_center(x, mean):
    return apply(ChannelCenter, x, mean)


def channel_dot(a, b):
    return apply(ChannelDot, a, b)


def batch_norm_train(centered, var, weight, bias, eps: float, across=None):
    return apply(BatchNormTrain, centered, var, weight, bias, eps=eps, across=across)


def batch_norm_train_grad(g, centered, mean_g, k, a):
    return apply(BatchNormTrainGrad, g, centered, mean_g, k, a)
