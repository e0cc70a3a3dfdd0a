"""Reductions, views, indexing and gathering, and the composites built on them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from trainctl.autograd import ops
from trainctl.autograd.ops.base import (
    Op,
    Spec,
    apply,
    dtype_of,
    into,
    normalize_axes,
    one_axis,
    onnx_reduce,
    reduced,
    shape_of,
)
from trainctl.errors import ShapeError

# ---------------------------------------------------------------- reductions


class Reduction(Op, register=False):
    """NumPy's own reduction `xp.<function>` over `axes`; `reduces` names the ufunc whose
    `.reduce` it is, which the generated code calls directly on NumPy."""

    kind = "reduction"
    function: str
    infer = staticmethod(lambda x, axes, keepdims: Spec(reduced(x.shape, axes, keepdims), x.dtype))

    @classmethod
    def forward(cls, xp, x, axes, keepdims, out=None):
        return getattr(xp, cls.function)(x, axis=axes, keepdims=keepdims, out=out)


class Sum(Reduction):
    onnx = onnx_reduce("ReduceSum")
    function, reduces = "sum", "add"

    @staticmethod
    def infer(x, axes, keepdims):
        # NumPy sums bools and small integers in the default integer type.
        dtype = np.zeros(0, x.dtype).sum().dtype
        return Spec(reduced(x.shape, axes, keepdims), dtype)

    @staticmethod
    def vjp(g, out, x, axes, keepdims):
        return (lambda: broadcast_to(reshape(g, reduced(x.shape, axes, True)), x.shape),)


class Max(Reduction):
    onnx = onnx_reduce("ReduceMax")
    function, reduces = "max", "maximum"

    @staticmethod
    def vjp(g, out, x, axes, keepdims):
        def grad():
            kept = reduced(x.shape, axes, True)
            hits = ops.cast(ops.equal(x, reshape(out, kept)), x.dtype)
            # Tied maxima share the gradient evenly, so the rule is the derivative of amax.
            return hits * reshape(g, kept) / reduce_sum(hits, axes, keepdims=True)

        return (grad,)


# ---------------------------------------------------------------- views


class View(Op, register=False):
    """An op whose forward returns a view of its input: graph mode gives it no storage."""

    kind = "view"

    @classmethod
    def view_of(cls, x: Any, **attrs: Any) -> Any:
        """The view of NumPy array `x` (a data-free layout probe), or None if it would copy."""
        return cls.forward(np, x, **attrs)


class Reshape(View):
    onnx = staticmethod(lambda b, inputs, shape: b.op("Reshape", *inputs, b.shape(shape)))

    @staticmethod
    def forward(xp, x, shape, out=None):
        if out is None:
            return xp.reshape(x, shape)
        # A reshape that cannot be a view copies in C order: x written into out seen in x's shape
        xp.copyto(out.reshape(x.shape), x)
        return out

    @classmethod
    def view_of(cls, x, shape):
        try:
            return np.reshape(x, shape, copy=False)
        except ValueError:
            return None

    @staticmethod
    def infer(x, shape):
        if math.prod(shape) != math.prod(x.shape):
            raise ShapeError(f"cannot reshape {tuple(x.shape)} into {shape}")
        return Spec(shape, x.dtype)

    vjp = staticmethod(lambda g, out, x, shape: (lambda: reshape(g, tuple(x.shape)),))


class Transpose(View):
    onnx = staticmethod(lambda b, inputs, axes: b.op("Transpose", *inputs, perm=list(axes)))
    forward = staticmethod(lambda xp, x, axes, out=None: into(xp, out, xp.transpose(x, axes)))
    infer = staticmethod(lambda x, axes: Spec(tuple(x.shape[a] for a in axes), x.dtype))

    @staticmethod
    def vjp(g, out, x, axes):
        return (lambda: transpose(g, tuple(int(a) for a in np.argsort(axes))),)


class BroadcastTo(View):
    onnx = staticmethod(lambda b, inputs, shape: b.op("Expand", *inputs, b.shape(shape)))
    forward = staticmethod(lambda xp, x, shape, out=None: into(xp, out, xp.broadcast_to(x, shape)))
    infer = staticmethod(lambda x, shape: Spec(_broadcast_exact(x, shape), x.dtype))
    vjp = staticmethod(lambda g, out, x, shape: (lambda: sum_to(g, tuple(x.shape)),))


def _broadcast_exact(x: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    try:
        fits = np.broadcast_shapes(tuple(x.shape), shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise ShapeError(f"cannot broadcast {tuple(x.shape)} to {shape}")
    return shape


def _index_spec(shape: tuple[int, ...], index: tuple) -> tuple[int, ...]:
    # A zero-strided dummy gives NumPy's own answer for basic indexing without any data.
    return np.broadcast_to(np.empty((), np.int8), shape)[index].shape


class Getitem(View):
    """Basic indexing: ints, slices, None and Ellipsis (no index arrays)."""

    onnx = staticmethod(lambda b, inputs, index: b.basic_index(*inputs, index))
    forward = staticmethod(lambda xp, x, index, out=None: into(xp, out, x[index]))
    infer = staticmethod(lambda x, index: Spec(_index_spec(tuple(x.shape), index), x.dtype))
    vjp = staticmethod(lambda g, out, x, index: (lambda: unslice(g, tuple(x.shape), index),))


# ---------------------------------------------------------------- writing into zeros, joining


class Unslice(Op):
    """Zeros of `shape` with `x` written at `index`: the adjoint of getitem."""

    @staticmethod
    def forward(xp, x, shape, index, out=None):
        if out is None:
            out = xp.zeros(shape, dtype=x.dtype)
        else:
            out.fill(0)
        out[index] = x
        return out

    infer = staticmethod(lambda x, shape, index: Spec(shape, x.dtype))
    vjp = staticmethod(lambda g, out, x, shape, index: (lambda: getitem(g, index),))


class Concatenate(Op):
    """`parts`: with a flat `out`, the positions still to copy (the planner computed the
    others straight into their slices of `out`)."""

    onnx = staticmethod(lambda b, inputs, axis: b.op("Concat", *inputs, axis=axis))

    @staticmethod
    def forward(xp, *xs, axis, out=None, parts=None):
        if parts is None:
            return xp.concatenate(xs, axis=axis, out=out)
        offset = 0
        for position, x in enumerate(xs):
            if position in parts:
                xp.copyto(out[offset : offset + x.size], x)
            offset += x.size
        return out

    @staticmethod
    def infer(*xs, axis):
        first = tuple(xs[0].shape)
        for x in xs[1:]:
            if len(x.shape) != len(first) or any(
                a != b for i, (a, b) in enumerate(zip(x.shape, first, strict=False)) if i != axis
            ):
                raise ShapeError(
                    f"cannot concatenate {[tuple(x.shape) for x in xs]} on axis {axis}"
                )
        size = sum(x.shape[axis] for x in xs)
        return Spec(first[:axis] + (size,) + first[axis + 1 :], dtype_of(*xs))

    @staticmethod
    def vjp(g, out, *xs, axis):
        bounds = np.cumsum([0] + [x.shape[axis] for x in xs])
        lead = (slice(None),) * axis

        def piece(start, stop):
            return lambda: getitem(g, lead + (slice(int(start), int(stop)),))

        return tuple(piece(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=False))


class GatherRows(Op):
    """table[indices]: an embedding lookup."""

    onnx = staticmethod(lambda b, inputs: b.op("Gather", *inputs, axis=0))
    forward = staticmethod(
        lambda xp, table, indices, out=None: xp.take(table, indices, axis=0, out=out)
    )

    @staticmethod
    def infer(table, indices):
        if not np.issubdtype(indices.dtype, np.integer):
            raise ShapeError(f"embedding indices must be integers, got {indices.dtype}")
        return Spec(tuple(indices.shape) + tuple(table.shape[1:]), table.dtype)

    @staticmethod
    def vjp(g, out, table, indices):
        return (lambda: scatter_add_rows(g, indices, table.shape[0]), None)


class ScatterAddRows(Op):
    """Sums rows of `x` into a (rows, ...) table at `indices`: the adjoint of gather_rows."""

    @staticmethod
    def forward(xp, x, indices, rows, out=None):
        if out is None:
            out = xp.zeros((rows,) + x.shape[indices.ndim :], dtype=x.dtype)
        else:
            out.fill(0)
        xp.add.at(out, indices, x)
        return out

    @staticmethod
    def infer(x, indices, rows):
        return Spec((rows,) + tuple(x.shape[len(indices.shape) :]), x.dtype)

    @staticmethod
    def vjp(g, out, x, indices, rows):
        return (lambda: gather_rows(g, indices), None)


# ---------------------------------------------------------------- the ops as functions


def reduce_sum(x, axis=None, keepdims: bool = False):
    return apply(Sum, x, axes=normalize_axes(axis, x.ndim), keepdims=keepdims)


def reduce_max(x, axis=None, keepdims: bool = False):
    return apply(Max, x, axes=normalize_axes(axis, x.ndim), keepdims=keepdims)


def reshape(x, shape):
    shape = (shape,) if isinstance(shape, int) else tuple(int(n) for n in shape)
    if -1 in shape:
        known = math.prod(n for n in shape if n != -1)
        shape = tuple(x.size // known if n == -1 else n for n in shape)
    return x if shape == tuple(x.shape) else apply(Reshape, x, shape=shape)


def transpose(x, axes=None):
    axes = (
        tuple(reversed(range(x.ndim))) if axes is None else tuple(one_axis(a, x.ndim) for a in axes)
    )
    if sorted(axes) != list(range(x.ndim)):
        raise ShapeError(f"transpose axes {axes} are not a permutation of {x.ndim} axes")
    return apply(Transpose, x, axes=axes)


def broadcast_to(x, shape):
    shape = tuple(shape)
    return x if shape == tuple(x.shape) else apply(BroadcastTo, x, shape=shape)


def getitem(x, index):
    index = index if isinstance(index, tuple) else (index,)
    for part in index:
        if not (part is None or part is Ellipsis or isinstance(part, (int, slice))):
            raise ShapeError(f"only basic indexing is supported (ints, slices), got {part!r}")
    return apply(Getitem, x, index=index)


def unslice(x, shape, index):
    return apply(Unslice, x, shape=tuple(shape), index=index)


def concatenate(xs, axis: int = 0):
    return apply(Concatenate, *xs, axis=one_axis(axis, xs[0].ndim))


def gather_rows(table, indices):
    return apply(GatherRows, table, indices)


def scatter_add_rows(x, indices, rows: int):
    return apply(ScatterAddRows, x, indices, rows=rows)


# ---------------------------------------------------------------- composites


def sum_to(x, shape: tuple[int, ...]):
    """Sum `x` down to `shape`: the reverse of broadcasting, used by every broadcasting vjp."""
    shape = tuple(shape)
    if shape_of(x) == shape:
        return x
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and x.shape[lead + i] != 1
    )
    return reshape(reduce_sum(x, axes, keepdims=True), shape)


def mean(x, axis=None, keepdims: bool = False):
    axes = normalize_axes(axis, x.ndim)
    count = math.prod(x.shape[a] for a in axes)
    return reduce_sum(x, axes, keepdims) * (1.0 / count)


def swapaxes(x, a: int, b: int):
    axes = list(range(x.ndim))
    axes[a], axes[b] = axes[b], axes[a]
    return transpose(x, axes)
