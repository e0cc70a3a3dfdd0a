"""Numba loops for the convolution and pooling kernels NumPy cannot run in one pass.

col2im sums kh*kw shifted pieces into an image: as ufuncs that is kh*kw strided adds over the
whole image (with few channels, each a slow strided walk), where one loop over the image reads
each pixel's contributions and writes it once. Max-pool forward as ufuncs is a strided
maximum over the whole output per window offset; the loop takes a row of windows at a time,
in cache. Max-pool backward as ufuncs is six whole-array ops per window offset (compare,
claim, mask, and, add); one loop finds each window's first maximum and routes its gradient
there. Each loop adds (or takes maxima) in the order the ufunc path does, from +0.0, with
NumPy's float arithmetic (no fastmath), so the two paths give the same bits.

Like `loops.py`, these run only on NumPy arrays of at least MIN_KERNEL_ELEMENTS elements: Numba
is imported, and a loop compiled, only when one that large first runs; smaller arrays stay
with the ufuncs, where the compile would not pay back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

# As loops.MIN_LOOP_ELEMENTS (the measurements are there). Measured on 2 shared cores (load 3),
# one thread: the small CNN's col2im at batch 64, 903k elements, 0.95 -> 0.36 ms; its first
# max-pool (load 2-4, 64x28x28x8, 401k elements) forward 0.27 -> 0.13 ms, backward 1.03 ->
# 0.35 ms (0.64 ms with the loop before this one, which scanned each window twice per pixel).
MIN_KERNEL_ELEMENTS = 65_536

LOOP_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

_compiled: dict[str, Callable[..., None]] = {}


def runs_loop(xp: Any, array: Any) -> bool:
    """Whether a kernel whose largest array is `array` (or its spec: shape and dtype) runs as
    a Numba loop: on NumPy, in float32 or float64 (Numba has no float16 or bfloat16), and big
    enough to pay for the compile (graph mode asks at planning time, with specs)."""
    return (
        xp is np
        and np.dtype(array.dtype) in LOOP_DTYPES
        and math.prod(array.shape) >= MIN_KERNEL_ELEMENTS
    )


def _col2im(cols, image, stride, padding):  # pragma: no cover (runs compiled)
    """Each image row gathers its pieces in the ufunc path's order: offsets (i, j) ascending."""
    n, oh, ow, kh, kw, c = cols.shape
    height, width = image.shape[1], image.shape[2]
    for b in range(n):
        for y in range(height):
            for x in range(width):
                for ch in range(c):
                    image[b, y, x, ch] = 0.0
            for i in range(kh):
                row = y + padding - i  # in the padded image; window r starts at r * stride
                if row < 0 or row % stride != 0 or row // stride >= oh:
                    continue
                r = row // stride
                for j in range(kw):
                    for q in range(ow):
                        x = q * stride + j - padding
                        if 0 <= x < width:
                            for ch in range(c):
                                image[b, y, x, ch] += cols[b, r, q, i, j, ch]


def _max_pool(x, kernel, stride, out):  # pragma: no cover (runs compiled)
    """Each window offset in the ufunc path's order, row of windows by row, with np.maximum's
    rule: the running maximum stays only if it is larger or NaN (on a tie, even of 0.0 and
    -0.0, the new value wins)."""
    n, oh, ow, c = out.shape
    for b in range(n):
        for r in range(oh):
            for q in range(ow):
                for ch in range(c):
                    out[b, r, q, ch] = x[b, r * stride, q * stride, ch]
            for k in range(1, kernel * kernel):
                y, j = r * stride + k // kernel, k % kernel
                for q in range(ow):
                    for ch in range(c):
                        m, v = out[b, r, q, ch], x[b, y, q * stride + j, ch]
                        out[b, r, q, ch] = m if (m > v or m != m) else v


def _max_pool_grad(g, x, pooled, kernel, stride, out):  # pragma: no cover (runs compiled)
    """Windows that do not overlap (stride >= kernel), so each pixel gets at most one
    gradient: 0.0 + g at the window's first maximum (row-major), 0.0 elsewhere. A row of
    windows at a time, window offset by offset, each pixel row read and written in order."""
    n, oh, ow, c = pooled.shape
    if oh * stride != out.shape[1] or ow * stride != out.shape[2] or stride != kernel:
        out[...] = 0.0  # pixels no window covers
    unclaimed = np.empty((ow, c), np.bool_)
    row = np.empty((ow, c), g.dtype)  # g's row, read once: g may be a broadcast view
    for b in range(n):
        for r in range(oh):
            unclaimed[...] = True
            for q in range(ow):
                for ch in range(c):
                    row[q, ch] = 0.0 + g[b, r, q, ch]
            for k in range(kernel * kernel):
                y, j = r * stride + k // kernel, k % kernel
                for q in range(ow):
                    for ch in range(c):
                        hit = (
                            unclaimed[q, ch] and x[b, y, q * stride + j, ch] == pooled[b, r, q, ch]
                        )
                        out[b, y, q * stride + j, ch] = row[q, ch] if hit else 0.0
                        unclaimed[q, ch] = unclaimed[q, ch] and not hit


_SOURCES = {"col2im": _col2im, "max_pool": _max_pool, "max_pool_grad": _max_pool_grad}


def kernel(name: str) -> Callable[..., None]:
    """The compiled loop `name` (Numba imported and the dispatcher made on first use)."""
    loop = _compiled.get(name)
    if loop is None:
        import numba

        loop = _compiled[name] = numba.njit(error_model="numpy", nogil=True)(_SOURCES[name])
    return loop
