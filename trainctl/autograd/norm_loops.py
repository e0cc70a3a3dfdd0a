"""Numba loops for BatchNorm's per-channel arithmetic on the CPU: one pass instead of several.

Training BatchNorm centres the activation (x - mean), scales and shifts it (c * s + b), and
in backward forms (g - c * k - mean_g) * a: per channel (the last axis), over every pixel.
As ufuncs each is two to four passes over the activation, every one a (C,) vector broadcast
(or tiled, see `ops.normalization`) against it; a loop reads each element once and writes
it once. Each loop computes every element with the ufunc path's operations in its order,
with NumPy's float arithmetic (no fastmath, so no FMA contraction), so the two paths give
the same bits. An output that is an input's own array gets a loop of its own, taking that
array once: two parameters for one array would keep LLVM from vectorizing the loop.

Like `loops.py`, these run only on NumPy float32 and float64 arrays of at least
MIN_NORM_ELEMENTS elements: Numba is imported, and a loop compiled, only when one that large
first runs; smaller arrays stay with the ufuncs, where the compile would not pay back.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from trainctl.autograd import chunk_threads

# Measured on 2 shared cores (load about 3.4), one thread, float32 with 32 channels, ufuncs ->
# loop per call: at 1M elements the centring 374 -> 102 us, scale and shift 573 -> 143, input
# gradient 1132 -> 445, a dot 642 -> 133 (at 4M: 2.8 -> 1.5, 4.6 -> 1.9, 8.0 -> 3.0, 2.1 -> 1.7
# ms); at 256k the four save 220 us a step together, at 64k 70 us. Compiling the loops a
# training BatchNorm uses costs about 1.2 s once (0.2-0.5 s each, Numba's import 0.35 s more
# when nothing imported it yet): from 1M elements one such layer pays it back within about 500
# steps; at 256k it would take 5,500.
MIN_NORM_ELEMENTS = 1 << 20

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def runs_loop(xp: Any, x: Any, *others: Any) -> bool:
    """Whether BatchNorm's arithmetic on `x` (and the arrays and vectors `others`) runs as a
    Numba loop: NumPy float32 or float64 arrays all of one dtype (a loop would compute a mixed
    expression in the wider type throughout, where the ufuncs round each step to the output's),
    `x` of at least MIN_NORM_ELEMENTS elements. An output still to be made (None) passes."""
    if xp is not np or x.dtype not in _DTYPES or math.prod(x.shape) < MIN_NORM_ELEMENTS:
        return False
    return all(other is None or other.dtype == x.dtype for other in others)


def runs_dot_loop(xp: Any, a: Any, b: Any, out: Any) -> bool:
    """Whether a per-channel dot product runs as a Numba loop: as `runs_loop`, over two
    channels or more (einsum reduces a single channel in another order)."""
    return len(a.shape) > 1 and a.shape[-1] > 1 and runs_loop(xp, a, b, out)


def _subtract(x, v, out):  # pragma: no cover (runs compiled)
    n, c = x.shape
    for i in range(n):
        for j in range(c):
            out[i, j] = x[i, j] - v[j]


def _subtract_in_place(x, v):  # pragma: no cover (runs compiled)
    n, c = x.shape
    for i in range(n):
        for j in range(c):
            x[i, j] = x[i, j] - v[j]


def _scale_shift(x, scale, shift, out):  # pragma: no cover (runs compiled)
    n, c = x.shape
    for i in range(n):
        for j in range(c):
            out[i, j] = x[i, j] * scale[j] + shift[j]


def _scale_shift_in_place(x, scale, shift):  # pragma: no cover (runs compiled)
    n, c = x.shape
    for i in range(n):
        for j in range(c):
            x[i, j] = x[i, j] * scale[j] + shift[j]


def _input_grad(g, centered, mean_g, k, a, out):  # pragma: no cover (runs compiled)
    """BatchNormTrainGrad's ufunc order: c * k, g minus it, minus mean_g, times a."""
    n, c = g.shape
    for i in range(n):
        for j in range(c):
            out[i, j] = ((g[i, j] - centered[i, j] * k[j]) - mean_g[j]) * a[j]


def _dot(a, b, out):  # pragma: no cover (runs compiled)
    """einsum("ij,ij->j")'s order: from +0.0, each row's products added in turn."""
    n, c = a.shape
    for j in range(c):
        out[j] = 0.0
    for i in range(n):
        for j in range(c):
            out[j] += a[i, j] * b[i, j]


_SOURCES = {
    "dot": _dot,
    "subtract": _subtract,
    "subtract_in_place": _subtract_in_place,
    "scale_shift": _scale_shift,
    "scale_shift_in_place": _scale_shift_in_place,
    "input_grad": _input_grad,
}


@functools.cache
def _loop(name: str) -> Callable[..., None]:
    import numba

    return numba.njit(error_model="numpy", nogil=True)(_SOURCES[name])


def rows(x: Any) -> Any:
    """`x` as (pixels, channels): a view of a C-ordered array."""
    return x.reshape(-1, x.shape[-1])


def dot(a: Any, b: Any, out: Any) -> None:
    """out = the sum of a * b over every axis but the last, as NumPy's einsum adds it (row by
    row from +0.0) when there are two channels or more: one channel, einsum takes another
    order, and `runs_dot_loop` says no. On one thread: a share of the channels per thread
    runs 1.4x slower than the whole (a strided view's loop does not vectorize), and a share
    of the rows would add in another order."""
    _loop("dot")(rows(a), rows(b), out)


def _by_rows(name: str, x: Any, *arrays_and_vectors: Any) -> None:
    """Loop `name` over x's rows (and those of the other arrays as large as x), in a share of
    the rows per thread; (C,) vectors pass whole."""
    args = [rows(a) if a.shape == x.shape else a for a in (x, *arrays_and_vectors)]
    vectors = [i for i, a in enumerate((x, *arrays_and_vectors)) if a.shape != x.shape]
    chunk_threads.share_rows(np, _loop(name), *args, whole=vectors)


def subtract(x: Any, v: Any, out: Any) -> None:
    """out = x - v per channel; `out` may be `x`'s own memory."""
    if np.may_share_memory(x, out):
        _by_rows("subtract_in_place", x, v)
    else:
        _by_rows("subtract", x, v, out)


def scale_shift(x: Any, scale: Any, shift: Any, out: Any) -> None:
    """out = x * scale + shift per channel; `out` may be `x`'s own memory."""
    if np.may_share_memory(x, out):
        _by_rows("scale_shift_in_place", x, scale, shift)
    else:
        _by_rows("scale_shift", x, scale, shift, out)


def input_grad(g: Any, centered: Any, mean_g: Any, k: Any, a: Any, out: Any) -> None:
    """out = (g - centered * k - mean_g) * a per channel, into an array of its own."""
    _by_rows("input_grad", g, centered, mean_g, k, a, out)
