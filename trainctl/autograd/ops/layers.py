"""Matrix products, convolution patches, pooling and dropout."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from trainctl.autograd import chunk_threads, conv_loops, ops
from trainctl.autograd.ops.base import (
    Op,
    Scratch,
    Spec,
    apply,
    dtype_of,
    empty,
    onnx_op,
    same,
    scratch_arrays,
)
from trainctl.backend import uniform
from trainctl.errors import ShapeError


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise ShapeError(f"window {kernel} (padding {padding}) does not fit input size {size}")
    return out


class Matmul(Op):
    """Batched matrix product of operands with at least two dimensions."""

    onnx = onnx_op("MatMul")
    ufunc = "matmul"  # with out=, forward is xp.matmul

    @staticmethod
    def forward(xp, a, b, out=None):
        if out is not None:
            return xp.matmul(a, b, out=out)
        out = xp.matmul(a, b)
        # NumPy multiplies bfloat16 (ml_dtypes) into float32: round to bfloat16, as GPUs do.
        return out if out.dtype == a.dtype else out.astype(a.dtype)

    @staticmethod
    def capturable(a: Any, b: Any) -> Callable[..., Any] | None:
        """A forward a CUDA graph can capture (CuPy refuses cuBLAS calls while capturing:
        autograd/cublas.py calls cuBLAS directly), or None when there is none."""
        from trainctl.autograd.cublas import load_gemm

        gemm = load_gemm()[0] if len(a.shape) == len(b.shape) == 2 else None
        return None if gemm is None else (lambda xp, a, b, out: gemm(a, b, out))

    @staticmethod
    def infer(a, b):
        if len(a.shape) < 2 or len(b.shape) < 2 or a.shape[-1] != b.shape[-2]:
            raise ShapeError(f"matmul of {tuple(a.shape)} and {tuple(b.shape)}: inner sizes differ")
        try:
            batch = np.broadcast_shapes(tuple(a.shape[:-2]), tuple(b.shape[:-2]))
        except ValueError:
            raise ShapeError(
                f"matmul of {tuple(a.shape)} and {tuple(b.shape)}: batch shapes do not broadcast"
            ) from None
        return Spec(batch + (a.shape[-2], b.shape[-1]), dtype_of(a, b))

    @staticmethod
    def vjp(g, out, a, b):
        return (
            lambda: ops.sum_to(matmul(g, ops.swapaxes(b, -1, -2)), tuple(a.shape)),
            lambda: ops.sum_to(matmul(ops.swapaxes(a, -1, -2), g), tuple(b.shape)),
        )


def _window_view(xp, x, kh, kw, stride):
    """A (N, OH, OW, KH, KW, C) strided view of the windows of an NHWC array (no copy)."""
    n, h, w, c = x.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    sn, sh, sw, sc = x.strides
    return xp.lib.stride_tricks.as_strided(
        x, (n, oh, ow, kh, kw, c), (sn, sh * stride, sw * stride, sh, sw, sc)
    )


def _padded_shape(x_shape, padding):
    n, h, w, c = x_shape
    return (n, h + 2 * padding, w + 2 * padding, c)


def _interior(padded, padding):
    n, h, w, c = padded.shape
    return padded[:, padding : h - padding, padding : w - padding, :]


def _patches_shape(x_shape, kh, kw, stride, padding):
    n, h, w, c = x_shape
    return (n, _conv_out(h, kh, stride, padding), _conv_out(w, kw, stride, padding), kh, kw, c)


def _shifted_windows(kh, kw, stride, oh, ow):
    """((i, j), index) for every kernel offset: the NHWC slice the offset's pixels occupy."""
    for i in range(kh):
        for j in range(kw):
            rows = slice(i, i + stride * (oh - 1) + 1, stride)
            columns = slice(j, j + stride * (ow - 1) + 1, stride)
            yield (i, j), (slice(None), rows, columns, slice(None))


class Im2col(Op):
    """NHWC image -> (N, OH, OW, KH, KW, C) patches, so a convolution is one GEMM.

    With padding, the image is copied into the interior of a zero-bordered scratch image
    (graph mode keeps one whose border is zeroed once)."""

    @staticmethod
    def scratch(out, x, kh, kw, stride, padding):
        return [Scratch(_padded_shape(x.shape, padding), x.dtype, True)] if padding else []

    @staticmethod
    def forward(xp, x, kh, kw, stride, padding, out=None, scratch=None):
        shape = _patches_shape(x.shape, kh, kw, stride, padding)  # a window that must fit
        out = xp.empty(shape, dtype=x.dtype) if out is None else out
        padded = x
        if padding:
            padded = scratch[0] if scratch else xp.zeros(_padded_shape(x.shape, padding), x.dtype)
            xp.copyto(_interior(padded, padding), x)
        if x.shape[3] != 1:
            xp.copyto(out, _window_view(xp, padded, kh, kw, stride))
            return out
        # One channel: the strided copy moves one value at a time; kh*kw copies of whole
        # shifted images move rows and are about 4x faster. The values are the same.
        for (i, j), window in _shifted_windows(kh, kw, stride, shape[1], shape[2]):
            xp.copyto(out[:, :, :, i, j, :], padded[window])
        return out

    @staticmethod
    def infer(x, kh, kw, stride, padding):
        if len(x.shape) != 4:
            raise ShapeError(f"images must be 4-d NHWC, got shape {tuple(x.shape)}")
        return Spec(_patches_shape(tuple(x.shape), kh, kw, stride, padding), x.dtype)

    @staticmethod
    def vjp(g, out, x, kh, kw, stride, padding):
        return (lambda: col2im(g, tuple(x.shape), kh, kw, stride, padding),)

    @staticmethod
    def onnx(b, inputs, kh, kw, stride, padding):
        """Each kernel offset's strided slice of the padded image, stacked (exact)."""
        (x,) = inputs
        _, oh, ow, _, _, c = _patches_shape(b.shape_of(x), kh, kw, stride, padding)
        if padding:
            x = b.op("Pad", x, b.ints([0, padding, padding, 0, 0, padding, padding, 0]))
        pieces = []
        for _, (_, rows, columns, _) in _shifted_windows(kh, kw, stride, oh, ow):
            starts, stops = b.ints([rows.start, columns.start]), b.ints([rows.stop, columns.stop])
            piece = b.op("Slice", x, starts, stops, b.ints([1, 2]), b.ints([stride, stride]))
            pieces.append(b.op("Unsqueeze", piece, b.ints([3])))
        patches = b.op("Concat", *pieces, axis=3)  # (N, OH, OW, KH * KW, C)
        return b.op("Reshape", patches, b.ints([0, oh, ow, kh, kw, c]))  # 0: N as it is


def col2im_transposes(channels: int) -> bool:
    """Whether col2im first copies the patches to (KH, KW, N, OH, OW, C).

    With a few channels per pixel, adding the strided pieces of (N, OH, OW, KH, KW, C)
    straight into the image is about twice as slow as one transposing copy and contiguous
    adds; from 16 channels on the pieces are long enough either way. Same sums, same order.
    """
    return 1 < channels <= 8


class Col2im(Op):
    """Patches -> NHWC image, summing where windows overlap: the adjoint of im2col.

    It sums into a padded image and returns its interior (a strided view): with padding its
    `storage` is that padded image, and `value_of(storage)` the value graph mode reads."""

    @staticmethod
    def storage(cols, x_shape, kh, kw, stride, padding):
        return Spec(_padded_shape(x_shape, padding), cols.dtype) if padding else None

    @staticmethod
    def value_of(padded, x_shape, kh, kw, stride, padding):
        return _interior(padded, padding)

    @staticmethod
    def scratch(out, cols, x_shape, kh, kw, stride, padding):
        n, oh, ow, _, _, c = cols.shape
        return [Scratch((kh, kw, n, oh, ow, c), cols.dtype)] if col2im_transposes(c) else []

    @classmethod
    def scratch_of(cls, node, xp, alias):
        if conv_loops.runs_loop(xp, node.inputs[0]):
            return []  # the loop needs none
        return super().scratch_of(node, xp, alias)

    @staticmethod
    def forward(xp, cols, x_shape, kh, kw, stride, padding, out=None, scratch=None):
        given = out is not None
        out = out if given else xp.zeros(_padded_shape(x_shape, padding), dtype=cols.dtype)
        if conv_loops.runs_loop(xp, cols):  # writes every pixel; the border is never read
            conv_loops.kernel("col2im")(cols, _interior(out, padding), stride, padding)
            return _interior(out, padding)
        if given:
            out.fill(0)
        oh, ow = cols.shape[1], cols.shape[2]
        pieces = cols.transpose(3, 4, 0, 1, 2, 5)  # [i, j] -> the (N, OH, OW, C) piece
        if scratch:
            xp.copyto(scratch[0], pieces)
            pieces = scratch[0]
        elif col2im_transposes(cols.shape[5]):
            pieces = xp.ascontiguousarray(pieces)
        for (i, j), window in _shifted_windows(kh, kw, stride, oh, ow):
            target = out[window]  # added in place: `out[window] +=` would copy it back too
            xp.add(target, pieces[i, j], out=target)
        return _interior(out, padding)

    infer = staticmethod(lambda cols, x_shape, kh, kw, stride, padding: Spec(x_shape, cols.dtype))

    @staticmethod
    def vjp(g, out, cols, x_shape, kh, kw, stride, padding):
        return (lambda: im2col(g, kh, kw, stride, padding),)


def _pool_slices(kernel, stride, oh, ow):
    """The strided slice of every window offset: pooling as k*k whole-array ops."""
    return (window for _, window in _shifted_windows(kernel, kernel, stride, oh, ow))


class MaxPool2d(Op):
    @staticmethod
    def forward(xp, x, kernel, stride, out=None):
        n, h, w, c = x.shape
        oh, ow = _conv_out(h, kernel, stride, 0), _conv_out(w, kernel, stride, 0)
        out = xp.empty((n, oh, ow, c), dtype=x.dtype) if out is None else out
        if conv_loops.runs_loop(xp, x):
            chunk_threads.share_rows(xp, conv_loops.kernel("max_pool"), x, kernel, stride, out)
            return out
        slices = _pool_slices(kernel, stride, oh, ow)
        xp.copyto(out, x[next(slices)])
        for window in slices:
            xp.maximum(out, x[window], out=out)
        return out

    @staticmethod
    def infer(x, kernel, stride):
        if len(x.shape) != 4:
            raise ShapeError(f"images must be 4-d NHWC, got shape {tuple(x.shape)}")
        n, h, w, c = x.shape
        return Spec(
            (n, _conv_out(h, kernel, stride, 0), _conv_out(w, kernel, stride, 0), c), x.dtype
        )

    @staticmethod
    def vjp(g, out, x, kernel, stride):
        return (lambda: max_pool2d_grad(g, x, out, kernel, stride),)

    @staticmethod
    def onnx(b, inputs, kernel, stride):
        nchw = b.op("Transpose", *inputs, perm=[0, 3, 1, 2])
        pooled = b.op("MaxPool", nchw, kernel_shape=[kernel, kernel], strides=[stride, stride])
        return b.op("Transpose", pooled, perm=[0, 2, 3, 1])


def mask_dtype(dtype: np.dtype) -> np.dtype:
    """The integer type as wide as `dtype`: masks of 0 / -1 and'ed with a float's bits."""
    return np.dtype(f"int{8 * np.dtype(dtype).itemsize}")


def pool_grad_runs_loop(xp, x, kernel, stride) -> bool:
    """Whether max-pool backward runs as one loop: large, and windows that do not overlap
    (overlapping ones would add in another order than the ufunc path)."""
    return stride >= kernel and conv_loops.runs_loop(xp, x)


class MaxPool2dGrad(Op):
    """Routes each window's gradient to its first maximal element, as PyTorch does: with
    masks of 0 / 1 (then 0 / -1, and'ed with g's bits), so nothing is allocated per window."""

    differentiable = False
    infer = staticmethod(lambda g, x, pooled, kernel, stride: same(x))

    @staticmethod
    def scratch(out, g, x, pooled, kernel, stride):
        shape, dtype = tuple(pooled.shape), out.dtype
        flags = Scratch(shape, np.dtype(np.int8))
        return [flags, flags, Scratch(shape, mask_dtype(dtype)), Scratch(shape, dtype)]

    @classmethod
    def scratch_of(cls, node, xp, alias):
        attrs = node.attrs
        if pool_grad_runs_loop(xp, node.inputs[1], attrs["kernel"], attrs["stride"]):
            return []  # the loop needs none
        return super().scratch_of(node, xp, alias)

    @staticmethod
    def forward(xp, g, x, pooled, kernel, stride, out=None, scratch=None):
        out = empty(xp, x) if out is None else out
        if pool_grad_runs_loop(xp, x, kernel, stride):
            loop = conv_loops.kernel("max_pool_grad")

            def by_images(x, g, pooled, out):  # x first: its size decides the sharing
                loop(g, x, pooled, kernel, stride, out)

            chunk_threads.share_rows(xp, by_images, x, g, pooled, out)
            return out
        unclaimed, hit, mask, routed = scratch or scratch_arrays(
            MaxPool2dGrad, xp, out, g, x, pooled, kernel=kernel, stride=stride
        )
        g_bits, routed_bits = g.view(mask.dtype), routed.view(mask.dtype)
        out.fill(0)
        unclaimed.fill(1)
        for window in _pool_slices(kernel, stride, pooled.shape[1], pooled.shape[2]):
            xp.equal(x[window], pooled, out=hit)
            xp.bitwise_and(hit, unclaimed, out=hit)
            xp.subtract(unclaimed, hit, out=unclaimed)
            xp.negative(hit, out=mask)
            xp.bitwise_and(g_bits, mask, out=routed_bits)
            target = out[window]
            xp.add(target, routed, out=target)
        return out


class Dropout(Op):
    """x * mask / (1 - p), the mask drawn from `key`; the vjp redraws the same mask."""

    @staticmethod
    def forward(xp, x, p, key, out=None):
        keep = uniform(xp, key, x.shape, x.dtype) >= p
        return xp.multiply(x * keep, 1.0 / (1.0 - p), out=out)

    infer = staticmethod(lambda x, p, key: same(x))
    # The mask is drawn in x's dtype: a gradient of another dtype would draw a different one.
    vjp = staticmethod(lambda g, out, x, p, key: (lambda: dropout(ops.cast(g, x.dtype), p, key),))


# ---------------------------------------------------------------- the ops as functions


def matmul(a, b):
    if len(ops.shape_of(a)) < 2 or len(ops.shape_of(b)) < 2:  # 1-d promotion has no vjp here
        raise ShapeError(
            f"matmul needs 2 or more dims, got shapes {ops.shape_of(a)} and {ops.shape_of(b)}"
        )
    return apply(Matmul, a, b)


def im2col(x, kh: int, kw: int, stride: int = 1, padding: int = 0):
    return apply(Im2col, x, kh=kh, kw=kw, stride=stride, padding=padding)


def col2im(cols, x_shape, kh: int, kw: int, stride: int = 1, padding: int = 0):
    return apply(Col2im, cols, x_shape=tuple(x_shape), kh=kh, kw=kw, stride=stride, padding=padding)


def max_pool2d(x, kernel: int, stride: int | None = None):
    return apply(MaxPool2d, x, kernel=kernel, stride=stride or kernel)


def max_pool2d_grad(g, x, out, kernel: int, stride: int):
    return apply(MaxPool2dGrad, g, x, out, kernel=kernel, stride=stride)


def dropout(x, p: float, key: tuple[int, int]):
    return apply(Dropout, x, p=float(p), key=key)
