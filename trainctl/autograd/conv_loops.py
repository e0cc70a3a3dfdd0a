"""Numba loops for the convolution and pooling kernels NumPy cannot run in one pass.

col2im sums kh*kw shifted pieces into an image: as ufuncs that is kh*kw strided adds over the
whole image (with few channels, each a slow strided walk), where one loop over the image reads
each pixel's contributions and writes it once. Max-pool backward as ufuncs is six whole-array
ops per window offset (compare, claim, mask, and, add); one loop finds each window's first
maximum and routes its gradient there. Each loop adds in the order the ufunc path adds, from
+0.0, with NumPy's float arithmetic (no fastmath), so the two paths give the same bits.

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
# max-pool backward, 401k elements, 1.03 -> 0.64 ms.
MIN_KERNEL_ELEMENTS = 65_536

_compiled: dict[str, Callable[..., None]] = {}


def runs_loop(xp: Any, shape: tuple[int, ...]) -> bool:
    """Whether a kernel whose largest array has `shape` runs as a Numba loop: on NumPy, and
    big enough to pay for the compile (graph mode asks at planning time, with shapes)."""
    return xp is np and math.prod(shape) >= MIN_KERNEL_ELEMENTS


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


def _max_pool_grad(g, x, pooled, kernel, stride, out):  # pragma: no cover (runs compiled)
    """Windows that do not overlap (stride >= kernel), so each pixel gets at most one
    gradient: 0.0 + g at the window's first maximum (row-major), 0.0 elsewhere."""
    n, oh, ow, c = pooled.shape
    if oh * stride != out.shape[1] or ow * stride != out.shape[2] or stride != kernel:
        out[...] = 0.0  # pixels no window covers
    first = np.empty(c, np.int64)
    for b in range(n):
        for r in range(oh):
            for q in range(ow):
                for ch in range(c):
                    first[ch] = kernel * kernel
                for k in range(kernel * kernel - 1, -1, -1):  # the last hit is the first max
                    y, xx = r * stride + k // kernel, q * stride + k % kernel
                    for ch in range(c):
                        if x[b, y, xx, ch] == pooled[b, r, q, ch]:
                            first[ch] = k
                for k in range(kernel * kernel):
                    y, xx = r * stride + k // kernel, q * stride + k % kernel
                    for ch in range(c):
                        out[b, y, xx, ch] = 0.0
                        if first[ch] == k:
                            out[b, y, xx, ch] += g[b, r, q, ch]


_SOURCES = {"col2im": _col2im, "max_pool_grad": _max_pool_grad}


def kernel(name: str) -> Callable[..., None]:
    """The compiled loop `name` (Numba imported and the dispatcher made on first use)."""
    loop = _compiled.get(name)
    if loop is None:
        import numba

        loop = _compiled[name] = numba.njit(error_model="numpy")(_SOURCES[name])
    return loop
