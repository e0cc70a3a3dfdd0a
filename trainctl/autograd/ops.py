"""The primitive ops: each defined once, as forward on arrays + shape/dtype rule + vjp rule.

`forward(xp, *arrays, **attrs)` computes on NumPy or CuPy arrays. `infer(*operands, **attrs)`
gives the output `Spec` from shapes and dtypes alone (graph mode traces with it). `vjp(g, out,
*inputs, **attrs)` returns one thunk per input; calling a thunk gives that input's gradient.
Thunks are written with these same ops, so they run on eager tensors and on symbolic graph
values alike, and a caller only pays for the gradients it asks for.

Python scalars may stand in for operands (`x * 2.0`); they are weakly typed, as in NumPy 2,
so they never change a tensor's dtype. Composites (mean, sum_to, swapaxes) sit at the end.
"""

from __future__ import annotations

import builtins
import math
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from trainctl.backend import uniform
from trainctl.errors import ShapeError

Thunk = Callable[[], Any]
Scalar = (int, float, bool)


class Spec(NamedTuple):
    """What graph mode knows of a value before it has data."""

    shape: tuple[int, ...]
    dtype: np.dtype


class Operand:
    """What tensors and graph values share: Python operators that call the ops below.

    Subclasses provide `shape`, `dtype` and `_apply(op, inputs, attrs)`, which either runs the
    op (eager) or records it (graph).
    """

    __slots__ = ()
    __array_ufunc__ = None  # `np.float32(2) * x` and `array * x` defer to our reflected operators
    _symbolic = False  # graph values set it: an op with any symbolic operand is recorded
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __add__(self, other):
        return add(self, other)

    def __radd__(self, other):
        return add(other, self)

    def __sub__(self, other):
        return sub(self, other)

    def __rsub__(self, other):
        return sub(other, self)

    def __mul__(self, other):
        return mul(self, other)

    def __rmul__(self, other):
        return mul(other, self)

    def __truediv__(self, other):
        return div(self, other)

    def __rtruediv__(self, other):
        return div(other, self)

    def __matmul__(self, other):
        return matmul(self, other)

    def __rmatmul__(self, other):
        return matmul(other, self)

    def __neg__(self):
        return neg(self)

    def __pow__(self, exponent):
        return pow(self, exponent)

    def __gt__(self, other):
        return greater(self, other)

    def __ge__(self, other):
        return greater_equal(self, other)

    def __lt__(self, other):
        return greater(other, self)

    def __le__(self, other):
        return greater_equal(other, self)

    def __getitem__(self, index):
        return getitem(self, index)

    def sum(self, axis=None, keepdims=False):
        return sum(self, axis, keepdims)

    def max(self, axis=None, keepdims=False):
        return max(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        return mean(self, axis, keepdims)

    def reshape(self, *shape):
        return reshape(self, shape[0] if len(shape) == 1 else shape)

    def transpose(self, *axes):
        return transpose(self, axes[0] if len(axes) == 1 else axes or None)

    def exp(self):
        return exp(self)

    def log(self):
        return log(self)

    def sqrt(self):
        return sqrt(self)

    def tanh(self):
        return tanh(self)

    def sigmoid(self):
        return sigmoid(self)

    def relu(self):
        return relu(self)

    def abs(self):
        return abs(self)

    def astype(self, dtype):
        return cast(self, dtype)

    @property
    def T(self):
        return transpose(self)


class Op:
    """A primitive. Subclasses set `forward`, `infer` and `vjp` as static methods; the class
    itself is the op (it is never instantiated), named in snake case (`MaxPool2d` -> max_pool2d).
    """

    differentiable = True

    def __init_subclass__(cls) -> None:
        cls.name = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
        REGISTRY[cls.name] = cls


REGISTRY: dict[str, type[Op]] = {}


def apply(op: type[Op], *inputs: Any, **attrs: Any) -> Any:
    """Run or record `op` on `inputs`, whichever the kind of the operands asks for.

    A symbolic operand wins over eager ones (`tensor @ traced` is recorded, the tensor becomes a
    constant of the graph); otherwise the first operand decides.
    """
    first = None
    for x in inputs:
        if isinstance(x, Operand):
            if x._symbolic:
                return x._apply(op, inputs, attrs)
            if first is None:
                first = x
    if first is None:
        raise TypeError(f"{op.name} needs at least one tensor operand, got {inputs!r}")
    return first._apply(op, inputs, attrs)


# ---------------------------------------------------------------- shape and dtype helpers


def _shape(x: Any) -> tuple[int, ...]:
    return () if isinstance(x, Scalar) else tuple(x.shape)


def _dtype(*xs: Any) -> np.dtype:
    return np.result_type(*(x if isinstance(x, Scalar) else x.dtype for x in xs))


def _broadcast(*xs: Any) -> Spec:
    try:
        shape = np.broadcast_shapes(*(_shape(x) for x in xs))
    except ValueError:
        raise ShapeError(f"shapes {[_shape(x) for x in xs]} cannot be broadcast together") from None
    return Spec(shape, _dtype(*xs))


def _same(x: Any) -> Spec:
    return Spec(_shape(x), x.dtype)


def _compare(a: Any, b: Any) -> Spec:
    return Spec(_broadcast(a, b).shape, np.dtype(bool))


def normalize_axes(axis: Any, ndim: int) -> tuple[int, ...]:
    """`None`, an int or a sequence of ints -> a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for a in axes:
        if not -ndim <= a < ndim:
            raise ShapeError(f"axis {a} is out of range for a {ndim}-d operand")
    return tuple(sorted(a % ndim for a in axes))


def _axis(axis: int, ndim: int) -> int:
    """One axis, made non-negative; out of range is an error, not a silent wrap."""
    return normalize_axes(int(axis), ndim)[0]


def _reduced(shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if i in axes else n for i, n in enumerate(shape))
    return tuple(n for i, n in enumerate(shape) if i not in axes)


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise ShapeError(f"window {kernel} (padding {padding}) does not fit input size {size}")
    return out


# ---------------------------------------------------------------- ONNX lowerings
# An op's `onnx(b, inputs, **attrs)` writes it with an export.onnx_builder.OnnxBuilder `b`
# (inputs: the ONNX names of its operands) and returns the name of its output; an op with
# none cannot be exported.


def _onnx_same(op_type: str):
    """The ONNX op of the same meaning, on the same operands."""
    return lambda b, inputs: b.op(op_type, *inputs)


def _onnx_reduce(op_type: str):
    def lower(b, inputs, axes, keepdims):
        return b.op(op_type, *inputs, b.ints(axes), keepdims=int(keepdims))

    return lower


# ---------------------------------------------------------------- elementwise, binary


class Add(Op):
    onnx = staticmethod(_onnx_same("Add"))
    forward = staticmethod(lambda xp, a, b: xp.add(a, b))
    infer = staticmethod(_broadcast)

    @staticmethod
    def vjp(g, out, a, b):
        return (lambda: sum_to(g, _shape(a)), lambda: sum_to(g, _shape(b)))


class Sub(Op):
    onnx = staticmethod(_onnx_same("Sub"))
    forward = staticmethod(lambda xp, a, b: xp.subtract(a, b))
    infer = staticmethod(_broadcast)

    @staticmethod
    def vjp(g, out, a, b):
        return (lambda: sum_to(g, _shape(a)), lambda: sum_to(-g, _shape(b)))


class Mul(Op):
    onnx = staticmethod(_onnx_same("Mul"))
    forward = staticmethod(lambda xp, a, b: xp.multiply(a, b))
    infer = staticmethod(_broadcast)

    @staticmethod
    def vjp(g, out, a, b):
        return (lambda: sum_to(g * b, _shape(a)), lambda: sum_to(g * a, _shape(b)))


class Div(Op):
    onnx = staticmethod(_onnx_same("Div"))
    forward = staticmethod(lambda xp, a, b: xp.divide(a, b))

    @staticmethod
    def infer(a, b):
        shape, dtype = _broadcast(a, b)
        # True division of integers or bools gives float64, as in NumPy.
        return Spec(shape, dtype if np.issubdtype(dtype, np.inexact) else np.dtype(np.float64))

    @staticmethod
    def vjp(g, out, a, b):
        # d(a/b)/db = -a/b^2 = -out/b
        return (lambda: sum_to(g / b, _shape(a)), lambda: sum_to(-g * out / b, _shape(b)))


class Maximum(Op):
    onnx = staticmethod(_onnx_same("Max"))
    forward = staticmethod(lambda xp, a, b: xp.maximum(a, b))
    infer = staticmethod(_broadcast)

    @staticmethod
    def vjp(g, out, a, b):
        # Ties split the gradient evenly, as in PyTorch.
        def share(x, other):
            return lambda: sum_to(
                where(other > x, 0.0, where(equal(x, other), g * 0.5, g)), _shape(x)
            )

        return (share(a, b), share(b, a))


class Greater(Op):
    onnx = staticmethod(_onnx_same("Greater"))
    differentiable = False
    forward = staticmethod(lambda xp, a, b: xp.greater(a, b))
    infer = staticmethod(_compare)


class GreaterEqual(Op):
    onnx = staticmethod(_onnx_same("GreaterOrEqual"))
    differentiable = False
    forward = staticmethod(lambda xp, a, b: xp.greater_equal(a, b))
    infer = staticmethod(_compare)


class Equal(Op):
    onnx = staticmethod(_onnx_same("Equal"))
    differentiable = False
    forward = staticmethod(lambda xp, a, b: xp.equal(a, b))
    infer = staticmethod(_compare)


class Where(Op):
    onnx = staticmethod(_onnx_same("Where"))
    forward = staticmethod(lambda xp, cond, a, b: xp.where(cond, a, b))

    @staticmethod
    def infer(cond, a, b):
        return Spec(_broadcast(cond, a, b).shape, _dtype(a, b))

    @staticmethod
    def vjp(g, out, cond, a, b):
        return (
            None,
            lambda: sum_to(where(cond, g, 0.0), _shape(a)),
            lambda: sum_to(where(cond, 0.0, g), _shape(b)),
        )


# ---------------------------------------------------------------- elementwise, unary


class Neg(Op):
    onnx = staticmethod(_onnx_same("Neg"))
    forward = staticmethod(lambda xp, x: xp.negative(x))
    infer = staticmethod(_same)
    vjp = staticmethod(lambda g, out, x: (lambda: -g,))


class Exp(Op):
    onnx = staticmethod(_onnx_same("Exp"))
    forward = staticmethod(lambda xp, x: xp.exp(x))
    infer = staticmethod(_same)
    vjp = staticmethod(lambda g, out, x: (lambda: g * out,))


class Log(Op):
    onnx = staticmethod(_onnx_same("Log"))
    forward = staticmethod(lambda xp, x: xp.log(x))
    infer = staticmethod(_same)
    vjp = staticmethod(lambda g, out, x: (lambda: g / x,))


class Sqrt(Op):
    onnx = staticmethod(_onnx_same("Sqrt"))
    forward = staticmethod(lambda xp, x: xp.sqrt(x))
    infer = staticmethod(_same)
    vjp = staticmethod(lambda g, out, x: (lambda: g * 0.5 / out,))


class Tanh(Op):
    onnx = staticmethod(_onnx_same("Tanh"))
    forward = staticmethod(lambda xp, x: xp.tanh(x))
    infer = staticmethod(_same)
    vjp = staticmethod(lambda g, out, x: (lambda: g * (1.0 - out * out),))


class Sigmoid(Op):
    onnx = staticmethod(_onnx_same("Sigmoid"))

    @staticmethod
    def forward(xp, x):
        # exp of a non-positive number never overflows, whatever the sign of x.
        e = xp.exp(-xp.abs(x))
        return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)

    infer = staticmethod(_same)
    vjp = staticmethod(lambda g, out, x: (lambda: g * out * (1.0 - out),))


class Relu(Op):
    onnx = staticmethod(_onnx_same("Relu"))
    forward = staticmethod(lambda xp, x: xp.maximum(x, 0))
    infer = staticmethod(_same)
    # relu'(0) = 0, as in PyTorch.
    vjp = staticmethod(lambda g, out, x: (lambda: where(x > 0, g, 0.0),))


class Abs(Op):
    onnx = staticmethod(_onnx_same("Abs"))
    forward = staticmethod(lambda xp, x: xp.abs(x))
    infer = staticmethod(_same)
    # abs'(0) = 0 (the sign of x), as in PyTorch.
    vjp = staticmethod(lambda g, out, x: (lambda: where(x > 0, g, where(x < 0, -g, 0.0)),))


class Pow(Op):
    """x ** exponent for a constant exponent."""

    onnx = staticmethod(lambda b, inputs, exponent: b.op("Pow", *inputs, b.const(exponent)))
    forward = staticmethod(lambda xp, x, exponent: xp.power(x, exponent))
    infer = staticmethod(lambda x, exponent: Spec(_shape(x), _dtype(x, exponent)))

    @staticmethod
    def vjp(g, out, x, exponent):
        return (lambda: g * (exponent * pow(x, exponent - 1)),)


class Cast(Op):
    onnx = staticmethod(lambda b, inputs, dtype: b.op("Cast", *inputs, to=b.onnx_type(dtype)))
    forward = staticmethod(lambda xp, x, dtype: x.astype(dtype, copy=False))
    infer = staticmethod(lambda x, dtype: Spec(_shape(x), dtype))
    vjp = staticmethod(lambda g, out, x, dtype: (lambda: cast(g, x.dtype),))


# ---------------------------------------------------------------- reductions


class Sum(Op):
    onnx = staticmethod(_onnx_reduce("ReduceSum"))
    forward = staticmethod(lambda xp, x, axes, keepdims: xp.sum(x, axis=axes, keepdims=keepdims))

    @staticmethod
    def infer(x, axes, keepdims):
        # NumPy sums bools and small integers in the default integer type.
        dtype = np.zeros(0, x.dtype).sum().dtype
        return Spec(_reduced(x.shape, axes, keepdims), dtype)

    @staticmethod
    def vjp(g, out, x, axes, keepdims):
        return (lambda: broadcast_to(reshape(g, _reduced(x.shape, axes, True)), x.shape),)


class Max(Op):
    onnx = staticmethod(_onnx_reduce("ReduceMax"))
    forward = staticmethod(lambda xp, x, axes, keepdims: xp.max(x, axis=axes, keepdims=keepdims))
    infer = staticmethod(lambda x, axes, keepdims: Spec(_reduced(x.shape, axes, keepdims), x.dtype))

    @staticmethod
    def vjp(g, out, x, axes, keepdims):
        def grad():
            kept = _reduced(x.shape, axes, True)
            hits = cast(equal(x, reshape(out, kept)), x.dtype)
            # Tied maxima share the gradient evenly, so the rule is the derivative of amax.
            return hits * reshape(g, kept) / sum(hits, axes, keepdims=True)

        return (grad,)


# ---------------------------------------------------------------- shapes and indexing


class Reshape(Op):
    onnx = staticmethod(lambda b, inputs, shape: b.op("Reshape", *inputs, b.shape(shape)))
    forward = staticmethod(lambda xp, x, shape: xp.reshape(x, shape))

    @staticmethod
    def infer(x, shape):
        if math.prod(shape) != math.prod(x.shape):
            raise ShapeError(f"cannot reshape {tuple(x.shape)} into {shape}")
        return Spec(shape, x.dtype)

    vjp = staticmethod(lambda g, out, x, shape: (lambda: reshape(g, tuple(x.shape)),))


class Transpose(Op):
    onnx = staticmethod(lambda b, inputs, axes: b.op("Transpose", *inputs, perm=list(axes)))
    forward = staticmethod(lambda xp, x, axes: xp.transpose(x, axes))
    infer = staticmethod(lambda x, axes: Spec(tuple(x.shape[a] for a in axes), x.dtype))

    @staticmethod
    def vjp(g, out, x, axes):
        return (lambda: transpose(g, tuple(int(a) for a in np.argsort(axes))),)


class BroadcastTo(Op):
    onnx = staticmethod(lambda b, inputs, shape: b.op("Expand", *inputs, b.shape(shape)))
    forward = staticmethod(lambda xp, x, shape: xp.broadcast_to(x, shape))
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


class Getitem(Op):
    """Basic indexing: ints, slices, None and Ellipsis (no index arrays)."""

    forward = staticmethod(lambda xp, x, index: x[index])
    infer = staticmethod(lambda x, index: Spec(_index_spec(tuple(x.shape), index), x.dtype))
    onnx = staticmethod(lambda b, inputs, index: b.basic_index(*inputs, index))
    vjp = staticmethod(lambda g, out, x, index: (lambda: unslice(g, tuple(x.shape), index),))


class Unslice(Op):
    """Zeros of `shape` with `x` written at `index`: the adjoint of getitem."""

    @staticmethod
    def forward(xp, x, shape, index):
        out = xp.zeros(shape, dtype=x.dtype)
        out[index] = x
        return out

    infer = staticmethod(lambda x, shape, index: Spec(shape, x.dtype))
    vjp = staticmethod(lambda g, out, x, shape, index: (lambda: getitem(g, index),))


class Concatenate(Op):
    onnx = staticmethod(lambda b, inputs, axis: b.op("Concat", *inputs, axis=axis))
    forward = staticmethod(lambda xp, *xs, axis: xp.concatenate(xs, axis=axis))

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
        size = builtins.sum(x.shape[axis] for x in xs)
        return Spec(first[:axis] + (size,) + first[axis + 1 :], _dtype(*xs))

    @staticmethod
    def vjp(g, out, *xs, axis):
        bounds = np.cumsum([0] + [x.shape[axis] for x in xs])
        lead = (slice(None),) * axis

        def piece(start, stop):
            return lambda: getitem(g, lead + (slice(int(start), int(stop)),))

        return tuple(piece(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=False))


# ---------------------------------------------------------------- linear algebra and images


class Matmul(Op):
    """Batched matrix product of operands with at least two dimensions."""

    onnx = staticmethod(_onnx_same("MatMul"))

    @staticmethod
    def forward(xp, a, b):
        out = xp.matmul(a, b)
        # NumPy multiplies bfloat16 (ml_dtypes) into float32: round to bfloat16, as GPUs do.
        return out if out.dtype == a.dtype else out.astype(a.dtype)

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
        return Spec(batch + (a.shape[-2], b.shape[-1]), _dtype(a, b))

    @staticmethod
    def vjp(g, out, a, b):
        return (
            lambda: sum_to(matmul(g, swapaxes(b, -1, -2)), tuple(a.shape)),
            lambda: sum_to(matmul(swapaxes(a, -1, -2), g), tuple(b.shape)),
        )


def _window_view(xp, x, kh, kw, stride):
    """A (N, OH, OW, KH, KW, C) strided view of the windows of an NHWC array (no copy)."""
    n, h, w, c = x.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    sn, sh, sw, sc = x.strides
    return xp.lib.stride_tricks.as_strided(
        x, (n, oh, ow, kh, kw, c), (sn, sh * stride, sw * stride, sh, sw, sc)
    )


def _pad_hw(xp, x, padding):
    if padding == 0:
        return x
    return xp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))


def _patches_shape(x_shape, kh, kw, stride, padding):
    n, h, w, c = x_shape
    return (n, _conv_out(h, kh, stride, padding), _conv_out(w, kw, stride, padding), kh, kw, c)


class Im2col(Op):
    """NHWC image -> (N, OH, OW, KH, KW, C) patches, so a convolution is one GEMM."""

    @staticmethod
    def forward(xp, x, kh, kw, stride, padding):
        shape = _patches_shape(x.shape, kh, kw, stride, padding)  # a window that must fit
        padded = _pad_hw(xp, x, padding)
        if x.shape[3] != 1:
            return xp.ascontiguousarray(_window_view(xp, padded, kh, kw, stride))
        # One channel: the strided copy moves one value at a time; kh*kw copies of whole
        # shifted images move rows and are about 4x faster. The values are the same.
        out = xp.empty(shape, dtype=x.dtype)
        for (i, j), window in _shifted_windows(kh, kw, stride, shape[1], shape[2]):
            out[:, :, :, i, j, :] = padded[window]
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


class Col2im(Op):
    """Patches -> NHWC image, summing where windows overlap: the adjoint of im2col."""

    @staticmethod
    def forward(xp, cols, x_shape, kh, kw, stride, padding):
        n, h, w, c = x_shape
        padded = xp.zeros((n, h + 2 * padding, w + 2 * padding, c), dtype=cols.dtype)
        oh, ow = cols.shape[1], cols.shape[2]
        pieces = _col2im_pieces(xp, cols)
        for (i, j), window in _shifted_windows(kh, kw, stride, oh, ow):
            padded[window] += pieces[i, j]
        return padded[:, padding : padding + h, padding : padding + w, :]

    infer = staticmethod(lambda cols, x_shape, kh, kw, stride, padding: Spec(x_shape, cols.dtype))

    @staticmethod
    def vjp(g, out, cols, x_shape, kh, kw, stride, padding):
        return (lambda: im2col(g, kh, kw, stride, padding),)


def _shifted_windows(kh, kw, stride, oh, ow):
    """((i, j), index) for every kernel offset: the NHWC slice the offset's pixels occupy."""
    for i in range(kh):
        for j in range(kw):
            rows = slice(i, i + stride * (oh - 1) + 1, stride)
            columns = slice(j, j + stride * (ow - 1) + 1, stride)
            yield (i, j), (slice(None), rows, columns, slice(None))


def col2im_transposes(channels: int) -> bool:
    """Whether col2im first copies the patches to (KH, KW, N, OH, OW, C).

    With a few channels per pixel, adding the strided pieces of (N, OH, OW, KH, KW, C)
    straight into the image is about twice as slow as one transposing copy and contiguous
    adds; from 16 channels on the pieces are long enough either way. Same sums, same order.
    """
    return 1 < channels <= 8


def _col2im_pieces(xp, cols):
    """cols indexed [i, j] -> the (N, OH, OW, C) piece of kernel offset (i, j)."""
    if col2im_transposes(cols.shape[5]):
        return xp.ascontiguousarray(cols.transpose(3, 4, 0, 1, 2, 5))
    return cols.transpose(3, 4, 0, 1, 2, 5)


def _pool_slices(kernel, stride, oh, ow):
    """The strided slice of every window offset: pooling as k*k whole-array ops."""
    return (window for _, window in _shifted_windows(kernel, kernel, stride, oh, ow))


class MaxPool2d(Op):
    @staticmethod
    def forward(xp, x, kernel, stride):
        n, h, w, c = x.shape
        oh, ow = _conv_out(h, kernel, stride, 0), _conv_out(w, kernel, stride, 0)
        slices = _pool_slices(kernel, stride, oh, ow)
        out = x[next(slices)].copy()
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


class MaxPool2dGrad(Op):
    """Routes each window's gradient to its first maximal element, as PyTorch does."""

    differentiable = False

    @staticmethod
    def forward(xp, g, x, out, kernel, stride):
        grad = xp.zeros_like(x)
        unclaimed = xp.ones(out.shape, dtype=bool)
        for window in _pool_slices(kernel, stride, out.shape[1], out.shape[2]):
            hit = (x[window] == out) & unclaimed
            grad[window] += xp.where(hit, g, 0)
            unclaimed &= ~hit
        return grad

    infer = staticmethod(lambda g, x, out, kernel, stride: _same(x))


# ---------------------------------------------------------------- softmax and losses


class Softmax(Op):
    onnx = staticmethod(lambda b, inputs, axis: b.op("Softmax", *inputs, axis=axis))

    @staticmethod
    def forward(xp, x, axis):
        e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
        return e / xp.sum(e, axis=axis, keepdims=True)

    infer = staticmethod(lambda x, axis: _same(x))

    @staticmethod
    def vjp(g, out, x, axis):
        return (lambda: out * (g - sum(g * out, axis, keepdims=True)),)


class LogSoftmax(Op):
    onnx = staticmethod(lambda b, inputs, axis: b.op("LogSoftmax", *inputs, axis=axis))

    @staticmethod
    def forward(xp, x, axis):
        z = x - xp.max(x, axis=axis, keepdims=True)
        return z - xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True))

    infer = staticmethod(lambda x, axis: _same(x))

    @staticmethod
    def vjp(g, out, x, axis):
        return (lambda: g - exp(out) * sum(g, axis, keepdims=True),)


class SoftmaxCrossEntropy(Op):
    """Per-sample -log softmax(logits)[label], fused and stable, with label smoothing.

    With smoothing e the target is (1 - e) * one_hot + e / C, as in PyTorch.
    """

    @staticmethod
    def forward(xp, logits, labels, smoothing):
        z = logits - xp.max(logits, axis=1, keepdims=True)
        log_probs = z - xp.log(xp.sum(xp.exp(z), axis=1, keepdims=True))
        nll = -xp.take_along_axis(log_probs, labels[:, None], axis=1)[:, 0]
        if smoothing:
            return (1.0 - smoothing) * nll - smoothing * xp.mean(log_probs, axis=1)
        return nll

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
            return (softmax(logits, 1) - target) * reshape(g, (logits.shape[0], 1))

        return (grad, None)


class OneHot(Op):
    differentiable = False

    @staticmethod
    def forward(xp, labels, classes, dtype):
        return (labels[..., None] == xp.arange(classes)).astype(dtype)

    infer = staticmethod(
        lambda labels, classes, dtype: Spec(tuple(labels.shape) + (classes,), dtype)
    )


# ---------------------------------------------------------------- embedding and dropout


class GatherRows(Op):
    """table[indices]: an embedding lookup."""

    onnx = staticmethod(lambda b, inputs: b.op("Gather", *inputs, axis=0))
    forward = staticmethod(lambda xp, table, indices: xp.take(table, indices, axis=0))

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
    def forward(xp, x, indices, rows):
        table = xp.zeros((rows,) + x.shape[indices.ndim :], dtype=x.dtype)
        xp.add.at(table, indices, x)
        return table

    @staticmethod
    def infer(x, indices, rows):
        return Spec((rows,) + tuple(x.shape[len(indices.shape) :]), x.dtype)

    @staticmethod
    def vjp(g, out, x, indices, rows):
        return (lambda: gather_rows(g, indices), None)


class Dropout(Op):
    """x * mask / (1 - p), the mask drawn from `key`; the vjp redraws the same mask."""

    @staticmethod
    def forward(xp, x, p, key):
        keep = uniform(xp, key, x.shape, x.dtype) >= p
        return x * keep * (1.0 / (1.0 - p))

    infer = staticmethod(lambda x, p, key: _same(x))
    # The mask is drawn in x's dtype: a gradient of another dtype would draw a different one.
    vjp = staticmethod(lambda g, out, x, p, key: (lambda: dropout(cast(g, x.dtype), p, key),))


# ---------------------------------------------------------------- the ops as functions


def add(a, b):
    return apply(Add, a, b)


def sub(a, b):
    return apply(Sub, a, b)


def mul(a, b):
    return apply(Mul, a, b)


def div(a, b):
    return apply(Div, a, b)


def maximum(a, b):
    return apply(Maximum, a, b)


def greater(a, b):
    return apply(Greater, a, b)


def greater_equal(a, b):
    return apply(GreaterEqual, a, b)


def equal(a, b):
    return apply(Equal, a, b)


def where(cond, a, b):
    return apply(Where, cond, a, b)


def neg(x):
    return apply(Neg, x)


def exp(x):
    return apply(Exp, x)


def log(x):
    return apply(Log, x)


def sqrt(x):
    return apply(Sqrt, x)


def tanh(x):
    return apply(Tanh, x)


def sigmoid(x):
    return apply(Sigmoid, x)


def relu(x):
    return apply(Relu, x)


def abs(x):
    return apply(Abs, x)


def pow(x, exponent: float):
    if not isinstance(exponent, Scalar):
        raise TypeError(f"pow takes a constant exponent, got {type(exponent).__name__}")
    return apply(Pow, x, exponent=exponent)


def cast(x, dtype):
    dtype = np.dtype(dtype)
    return x if x.dtype == dtype else apply(Cast, x, dtype=dtype)


def sum(x, axis=None, keepdims: bool = False):
    return apply(Sum, x, axes=normalize_axes(axis, x.ndim), keepdims=keepdims)


def max(x, axis=None, keepdims: bool = False):
    return apply(Max, x, axes=normalize_axes(axis, x.ndim), keepdims=keepdims)


def reshape(x, shape):
    shape = (shape,) if isinstance(shape, int) else tuple(int(n) for n in shape)
    if -1 in shape:
        known = math.prod(n for n in shape if n != -1)
        shape = tuple(x.size // known if n == -1 else n for n in shape)
    return x if shape == tuple(x.shape) else apply(Reshape, x, shape=shape)


def transpose(x, axes=None):
    axes = tuple(reversed(range(x.ndim))) if axes is None else tuple(_axis(a, x.ndim) for a in axes)
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
    return apply(Concatenate, *xs, axis=_axis(axis, xs[0].ndim))


def matmul(a, b):
    if len(_shape(a)) < 2 or len(_shape(b)) < 2:  # NumPy's 1-d promotion has no vjp rule here
        raise ShapeError(f"matmul needs 2 or more dims, got shapes {_shape(a)} and {_shape(b)}")
    return apply(Matmul, a, b)


def im2col(x, kh: int, kw: int, stride: int = 1, padding: int = 0):
    return apply(Im2col, x, kh=kh, kw=kw, stride=stride, padding=padding)


def col2im(cols, x_shape, kh: int, kw: int, stride: int = 1, padding: int = 0):
    return apply(Col2im, cols, x_shape=tuple(x_shape), kh=kh, kw=kw, stride=stride, padding=padding)


def max_pool2d(x, kernel: int, stride: int | None = None):
    return apply(MaxPool2d, x, kernel=kernel, stride=stride or kernel)


def max_pool2d_grad(g, x, out, kernel: int, stride: int):
    return apply(MaxPool2dGrad, g, x, out, kernel=kernel, stride=stride)


def softmax(x, axis: int = -1):
    return apply(Softmax, x, axis=_axis(axis, x.ndim))


def log_softmax(x, axis: int = -1):
    return apply(LogSoftmax, x, axis=_axis(axis, x.ndim))


def softmax_cross_entropy(logits, labels, smoothing: float = 0.0):
    return apply(SoftmaxCrossEntropy, logits, labels, smoothing=float(smoothing))


def one_hot(labels, classes: int, dtype=np.float32):
    return apply(OneHot, labels, classes=classes, dtype=np.dtype(dtype))


def gather_rows(table, indices):
    return apply(GatherRows, table, indices)


def scatter_add_rows(x, indices, rows: int):
    return apply(ScatterAddRows, x, indices, rows=rows)


def dropout(x, p: float, key: tuple[int, int]):
    return apply(Dropout, x, p=float(p), key=key)


# ---------------------------------------------------------------- composites


def sum_to(x, shape: tuple[int, ...]):
    """Sum `x` down to `shape`: the reverse of broadcasting, used by every broadcasting vjp."""
    shape = tuple(shape)
    if _shape(x) == shape:
        return x
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and x.shape[lead + i] != 1
    )
    return reshape(sum(x, axes, keepdims=True), shape)


def mean(x, axis=None, keepdims: bool = False):
    axes = normalize_axes(axis, x.ndim)
    count = math.prod(x.shape[a] for a in axes)
    return sum(x, axes, keepdims) * (1.0 / count)


def swapaxes(x, a: int, b: int):
    axes = list(range(x.ndim))
    axes[a], axes[b] = axes[b], axes[a]
    return transpose(x, axes)
