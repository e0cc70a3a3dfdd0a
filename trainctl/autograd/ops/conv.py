"""Convolution as ops of its own, run in batch chunks: the CPU's conv.

im2col + one GEMM over the whole batch writes a patch matrix kh*kw times the image (144 MiB
for a 32-channel 3x3 conv of 128 CIFAR images) and reads it back from memory; in chunks of
CHUNK_BYTES of patches it stays in the cache, and the three kernels of a conv (forward,
input gradient, weight gradient) each ran 2-3x faster (figures at CHUNK_BYTES). The
backward recomputes the patches instead of keeping them, so a step holds no patch matrix
from forward to backward.

The forward adds the bias (optional) to each chunk's output while it is in the cache, tiled to
long rows: NumPy's broadcast add of a (C,) vector has an inner loop of only C elements, and the
reduction over three axes that would be the bias gradient of a separate `y + b` is ~20x slower
than `channel_sum`'s one BLAS matrix-vector product (both measured in docs/engine.md).

The chunk size depends only on shapes, so eager and graph mode cut a batch alike and get the
same bits. The weight gradient adds the chunks' products in chunk order.
"""

from __future__ import annotations

import math

from trainctl.autograd import chunk_threads, conv_loops
from trainctl.autograd.ops.base import Op, Scratch, Spec, apply, dtype_of, empty
from trainctl.autograd.ops.layers import (
    Col2im,
    Im2col,
    _interior,
    _padded_shape,
    _patches_shape,
    _shifted_windows,
)
from trainctl.autograd.ops.normalization import _rows, channel_sum
from trainctl.errors import ShapeError

# Patches per chunk: measured on the 2-core machine (one thread), a 32 -> 32 channel 3x3 conv
# of 128 32x32 images took 290 ms for forward + both gradients over the whole batch, 110 ms
# in chunks of 1-4 MiB, 160 ms at 9 MiB; a 64 -> 64 one 148 ms whole, 88 ms at 1-5 MiB.
CHUNK_BYTES = 2 << 20


def chunk_size(x_shape: tuple[int, ...], kh: int, kw: int, stride: int, padding: int,
               itemsize: int) -> int:  # fmt: skip
    """Images per chunk: as many as keep one chunk's patches within CHUNK_BYTES (at least 1)."""
    _, oh, ow, _, _, c = _patches_shape(x_shape, kh, kw, stride, padding)
    per_image = oh * ow * kh * kw * c * itemsize
    return max(1, min(x_shape[0], CHUNK_BYTES // per_image))


def _new_scratch(op, xp, out, *inputs, **attrs):
    """Zeroed scratch for an eager call (a padded image's border must start at zero)."""
    specs = op.scratch(Spec(out.shape, out.dtype), *inputs, **attrs)
    return [xp.zeros(s.shape, s.dtype) for s in specs]


def _chunks(n: int, size: int):
    return ((start, min(n, start + size)) for start in range(0, n, size))


def plane_major(channels: int) -> bool:
    """Whether the patches are made plane by plane (see `_patches`): with 1-3 channels."""
    return channels <= 3


def _patch_scratch(x_shape, kh, kw, stride, padding, dtype) -> list[Scratch]:
    """One chunk's patches (flat when made plane by plane), and its zero-bordered image when
    there is padding."""
    size = chunk_size(x_shape, kh, kw, stride, padding, dtype.itemsize)
    chunk = (size, *x_shape[1:])
    shape = _patches_shape(chunk, kh, kw, stride, padding)
    patches = Scratch((math.prod(shape),) if plane_major(x_shape[3]) else shape, dtype)
    return [patches, *Im2col.scratch(None, Spec(chunk, dtype), kh, kw, stride, padding)]


def _patches(xp, x, start, stop, kh, kw, stride, padding, scratch):
    """The patches of images start:stop as a (rows, kh * kw * C) matrix, in scratch.

    With 1-3 channels they are made plane-major: each (kernel offset, channel) plane of the
    shifted images one contiguous row of a (kh * kw * C, rows) array, returned as its
    transpose (BLAS reads either order). That copies runs of whole image rows instead of
    writing C values out of every kh * kw * C. Forward and weight gradient, 3x3 conv to 8
    channels, 1 thread: 64x28x28x1 0.64 -> 0.50 ms each, 64x28x28x2 1.9 -> 0.8-1.1 ms; with 3
    channels (128x32x32x3 to 32) even, 6-7 ms either way (the patches are made faster, the
    GEMM reads the transpose slower); from 8 channels on the (rows, kh * kw * C) layout
    wins (the patches of 37x14x14x8: 0.14 vs 0.45 ms)."""
    patches, *padded = scratch
    images = x[start:stop]
    if padded:
        padded = [padded[0][: stop - start]]
    c = x.shape[3]
    if not plane_major(c):
        patches = patches[: stop - start]
        Im2col.forward(xp, images, kh, kw, stride, padding, out=patches, scratch=padded)
        return patches.reshape(-1, patches.shape[3] * patches.shape[4] * patches.shape[5])
    n, oh, ow = _patches_shape(images.shape, kh, kw, stride, padding)[:3]
    planes = patches[: kh * kw * c * n * oh * ow].reshape(kh, kw, c, n, oh, ow)
    if padding:
        xp.copyto(_interior(padded[0], padding), images)
        images = padded[0]
    by_channel = images.transpose(3, 0, 1, 2)  # (C, N, H, W) view
    for (i, j), (_, rows, columns, _) in _shifted_windows(kh, kw, stride, oh, ow):
        xp.copyto(planes[i, j], by_channel[:, :, rows, columns])
    return planes.reshape(kh * kw * c, n * oh * ow).T


class Conv2d(Op):
    """NHWC cross-correlation with a (KH, KW, Cin, Cout) weight and an optional (Cout,) bias,
    chunk by chunk."""

    @staticmethod
    def infer(x, w, bias=None, *, stride, padding):
        if len(x.shape) != 4 or len(w.shape) != 4 or x.shape[3] != w.shape[2]:
            raise ShapeError(
                f"conv2d of images {tuple(x.shape)} (NHWC) with weight {tuple(w.shape)} "
                "(KH, KW, Cin, Cout): channels differ"
            )
        if bias is not None and tuple(bias.shape) != (w.shape[3],):
            raise ShapeError(f"conv2d bias {tuple(bias.shape)} for weight {tuple(w.shape)}")
        n, oh, ow = _patches_shape(tuple(x.shape), w.shape[0], w.shape[1], stride, padding)[:3]
        return Spec((n, oh, ow, w.shape[3]), dtype_of(x, w, *([] if bias is None else [bias])))

    @staticmethod
    def scratch(out, x, w, bias=None, *, stride, padding):
        return _patch_scratch(tuple(x.shape), w.shape[0], w.shape[1], stride, padding, out.dtype)

    @staticmethod
    def forward(xp, x, w, bias=None, *, stride, padding, out=None, scratch=None):
        kh, kw, cin, cout = w.shape
        if out is None:
            out = empty(xp, Conv2d.infer(x, w, bias, stride=stride, padding=padding))
        scratch = scratch or _new_scratch(Conv2d, xp, out, x, w, stride=stride, padding=padding)
        weight = w.reshape(kh * kw * cin, cout)
        size = chunk_size(x.shape, kh, kw, stride, padding, out.dtype.itemsize)
        chunks = list(_chunks(x.shape[0], size))

        def work(index, start, stop, scratch):
            patches = _patches(xp, x, start, stop, kh, kw, stride, padding, scratch)
            xp.matmul(patches, weight, out=out[start:stop].reshape(-1, cout))
            if bias is not None:
                rows, bias_row = _rows(xp, out[start:stop], bias)
                xp.add(rows, bias_row, out=rows)

        chunk_threads.run_chunks(
            "conv2d", chunks, chunk_threads.threads_for(xp, len(chunks)), scratch, work
        )
        return out

    @staticmethod
    def vjp(g, out, x, w, bias=None, *, stride, padding):
        grads = (
            lambda: conv2d_input_grad(g, w, tuple(x.shape), stride, padding),
            lambda: conv2d_weight_grad(x, g, w.shape[0], w.shape[1], stride, padding),
        )
        return grads if bias is None else (*grads, lambda: channel_sum(g))

    @staticmethod
    def onnx(b, inputs, stride, padding):
        """ONNX's Conv is NCHW with (Cout, Cin, KH, KW) weights: transposed in and out."""
        x, w, *bias = inputs
        nchw = b.op("Transpose", x, perm=[0, 3, 1, 2])
        oihw = b.op("Transpose", w, perm=[3, 2, 0, 1])
        y = b.op("Conv", nchw, oihw, *bias, strides=[stride, stride], pads=[padding] * 4)
        return b.op("Transpose", y, perm=[0, 2, 3, 1])


class Conv2dInputGrad(Op):
    """The gradient of conv2d with respect to its images: per chunk, g @ W^T, then col2im."""

    infer = staticmethod(lambda g, w, x_shape, stride, padding: Spec(x_shape, dtype_of(g, w)))

    @staticmethod
    def scratch(out, g, w, x_shape, stride, padding):
        kh, kw = w.shape[:2]
        size = chunk_size(x_shape, kh, kw, stride, padding, out.dtype.itemsize)
        chunk = (size, *x_shape[1:])
        cols = Scratch(_patches_shape(chunk, kh, kw, stride, padding), out.dtype)
        padded = Scratch(_padded_shape(chunk, padding), out.dtype)
        return [cols, padded, *Col2im.scratch(None, cols, chunk, kh, kw, stride, padding)]

    @classmethod
    def scratch_of(cls, node, xp, alias):
        scratch = super().scratch_of(node, xp, alias)
        return scratch[:1] if conv_loops.runs_loop(xp, scratch[0]) else scratch

    @staticmethod
    def forward(xp, g, w, x_shape, stride, padding, out=None, scratch=None):
        kh, kw, cin, cout = w.shape
        out = xp.empty(x_shape, dtype=dtype_of(g, w)) if out is None else out
        attrs = {"x_shape": x_shape, "stride": stride, "padding": padding}
        scratch = scratch or _new_scratch(Conv2dInputGrad, xp, out, g, w, **attrs)
        loop = conv_loops.runs_loop(xp, scratch[0])  # by the whole chunk: as scratch_of
        weight_t = w.reshape(kh * kw * cin, cout).T
        size = chunk_size(x_shape, kh, kw, stride, padding, out.dtype.itemsize)
        chunks = list(_chunks(x_shape[0], size))

        def work(index, start, stop, scratch):
            cols = scratch[0][: stop - start]
            rows = g[start:stop].reshape(-1, cout)
            xp.matmul(rows, weight_t, out=cols.reshape(-1, kh * kw * cin))
            if loop:
                conv_loops.kernel("col2im")(cols, out[start:stop], stride, padding)
                return
            chunk = (stop - start, *x_shape[1:])
            padded = scratch[1][: stop - start]
            pieces = [s[:, :, : stop - start] for s in scratch[2:]]  # (kh, kw, n, ...)
            Col2im.forward(xp, cols, chunk, kh, kw, stride, padding, out=padded, scratch=pieces)
            xp.copyto(out[start:stop], _interior(padded, padding))

        chunk_threads.run_chunks(
            "conv2d_input_grad", chunks, chunk_threads.threads_for(xp, len(chunks)), scratch, work
        )
        return out

    @staticmethod
    def vjp(h, out, g, w, x_shape, stride, padding):
        kh, kw = w.shape[:2]
        return (
            lambda: conv2d(h, w, stride, padding),
            lambda: conv2d_weight_grad(h, g, kh, kw, stride, padding),
        )


class Conv2dWeightGrad(Op):
    """The gradient of conv2d with respect to its weight: the sum over chunks of
    patches^T @ g, recomputing each chunk's patches from the images."""

    @staticmethod
    def infer(x, g, kh, kw, stride, padding):
        return Spec((kh, kw, x.shape[3], g.shape[3]), dtype_of(x, g))

    @staticmethod
    def scratch(out, x, g, kh, kw, stride, padding):
        product = Scratch(tuple(out.shape), out.dtype)
        return [*_patch_scratch(tuple(x.shape), kh, kw, stride, padding, out.dtype), product]

    @staticmethod
    def forward(xp, x, g, kh, kw, stride, padding, out=None, scratch=None):
        cout = g.shape[3]
        out = xp.empty((kh, kw, x.shape[3], cout), dtype=dtype_of(x, g)) if out is None else out
        attrs = {"kh": kh, "kw": kw, "stride": stride, "padding": padding}
        scratch = scratch or _new_scratch(Conv2dWeightGrad, xp, out, x, g, **attrs)
        total, product = out.reshape(-1, cout), scratch[-1].reshape(-1, cout)
        size = chunk_size(x.shape, kh, kw, stride, padding, out.dtype.itemsize)
        chunks = list(_chunks(x.shape[0], size))
        threads = chunk_threads.threads_for(xp, len(chunks))
        # On several threads each chunk's product has its own slot, added in chunk order
        # afterwards: the same sum, in the same order, as one thread's.
        products = (
            chunk_threads.kept_array((len(chunks), *total.shape), total.dtype)
            if threads > 1
            else None
        )

        def work(index, start, stop, scratch):
            patches = _patches(xp, x, start, stop, kh, kw, stride, padding, scratch)
            rows = g[start:stop].reshape(-1, cout)
            if products is not None:
                xp.matmul(patches.T, rows, out=products[index])
            elif index == 0:
                xp.matmul(patches.T, rows, out=total)
            else:
                xp.matmul(patches.T, rows, out=product)
                xp.add(total, product, out=total)

        chunk_threads.run_chunks("conv2d_weight_grad", chunks, threads, scratch[:-1], work)
        if products is not None:
            xp.copyto(total, products[0])
            for index in range(1, len(chunks)):
                xp.add(total, products[index], out=total)
        return out

    @staticmethod
    def vjp(h, out, x, g, kh, kw, stride, padding):
        return (
            lambda: conv2d_input_grad(g, h, tuple(x.shape), stride, padding),
            lambda: conv2d(x, h, stride, padding),
        )


def conv2d(x, w, stride: int = 1, padding: int = 0, bias=None):
    """The convolution of `x` by `w`, plus `bias` per output channel when given."""
    operands = (x, w) if bias is None else (x, w, bias)
    return apply(Conv2d, *operands, stride=stride, padding=padding)


def conv2d_input_grad(g, w, x_shape, stride: int = 1, padding: int = 0):
    return apply(Conv2dInputGrad, g, w, x_shape=tuple(x_shape), stride=stride, padding=padding)


def conv2d_weight_grad(x, g, kh: int, kw: int, stride: int = 1, padding: int = 0):
    return apply(Conv2dWeightGrad, x, g, kh=kh, kw=kw, stride=stride, padding=padding)
