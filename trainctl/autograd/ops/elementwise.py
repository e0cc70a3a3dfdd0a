"""Elementwise ops: each with its NumPy/CuPy forward and its scalar `expression`, from which
graph mode renders CuPy kernels and Numba loops for fused chains."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from trainctl.autograd import chunk_threads, ops
from trainctl.autograd.ops.base import (
    ANY,
    Op,
    Scalar,
    Scratch,
    Spec,
    apply,
    broadcast,
    dtype_of,
    empty,
    function,
    onnx_op,
    same,
    scratch_arrays,
    shape_of,
)


class Elementwise(Op, register=False):
    kind = "elementwise"
    overwrites = ANY  # a ufunc may write over an operand it reads, element by element
    infer = staticmethod(same)


class Arithmetic(Elementwise, register=False):
    """A binary ufunc that broadcasts, exact in Numba loops when it computes in floats."""

    exact_loop = "float"
    infer = staticmethod(broadcast)


class Add(Arithmetic):
    ufunc, onnx, symbol = "add", onnx_op("Add"), "+"
    expression = "lambda a, b: a + b"

    @staticmethod
    def vjp(g, out, a, b):
        return (lambda: ops.sum_to(g, shape_of(a)), lambda: ops.sum_to(g, shape_of(b)))


class Sub(Arithmetic):
    ufunc, onnx, symbol = "subtract", onnx_op("Sub"), "-"
    expression = "lambda a, b: a - b"

    @staticmethod
    def vjp(g, out, a, b):
        return (lambda: ops.sum_to(g, shape_of(a)), lambda: ops.sum_to(-g, shape_of(b)))


class Mul(Arithmetic):
    ufunc, onnx, symbol = "multiply", onnx_op("Mul"), "*"
    expression = "lambda a, b: a * b"

    @staticmethod
    def vjp(g, out, a, b):
        return (lambda: ops.sum_to(g * b, shape_of(a)), lambda: ops.sum_to(g * a, shape_of(b)))


class Div(Arithmetic):
    ufunc, onnx, symbol = "divide", onnx_op("Div"), "/"
    expression = "lambda a, b: a / b"

    @staticmethod
    def infer(a, b):
        shape, dtype = broadcast(a, b)
        # True division of integers or bools gives float64, as in NumPy.
        return Spec(shape, dtype if np.issubdtype(dtype, np.inexact) else np.dtype(np.float64))

    @staticmethod
    def vjp(g, out, a, b):
        # d(a/b)/db = -a/b^2 = -out/b
        return (
            lambda: ops.sum_to(g / b, shape_of(a)),
            lambda: ops.sum_to(-g * out / b, shape_of(b)),
        )


class Maximum(Elementwise):
    ufunc, onnx, expression = "maximum", onnx_op("Max"), "lambda a, b: maximum(a, b)"
    infer = staticmethod(broadcast)

    @staticmethod
    def vjp(g, out, a, b):
        # Ties split the gradient evenly, as in PyTorch.
        def share(x, other):
            return lambda: ops.sum_to(
                where(other > x, 0.0, where(equal(x, other), g * 0.5, g)), shape_of(x)
            )

        return (share(a, b), share(b, a))


class Comparison(Elementwise, register=False):
    differentiable = False
    exact_loop = ANY
    infer = staticmethod(lambda a, b: Spec(broadcast(a, b).shape, np.dtype(bool)))


class Greater(Comparison):
    ufunc, onnx, expression = "greater", onnx_op("Greater"), "lambda a, b: a > b"


class GreaterEqual(Comparison):
    ufunc, onnx, expression = "greater_equal", onnx_op("GreaterOrEqual"), "lambda a, b: a >= b"


class Equal(Comparison):
    ufunc, onnx, expression = "equal", onnx_op("Equal"), "lambda a, b: a == b"


# From this many elements `where(cond, a, scalar)` runs as bit masks on NumPy. np.where and a
# masked copyto branch on every element: with a random condition (ReLU's backward) 3.8 ms for
# 1M float32 elements against 0.38 ms as masks, 184 against 27 us at 64k, 10 against 6 us at
# 8k; at 1k all take 3-4 us.
MIN_MASK_ELEMENTS = 4096
_NUMBER = (int, float, np.number)  # a `b` the masks take


def _by_masks(xp: Any, out: Any, cond: Any, a: Any, b: Any) -> bool:
    """Whether Where computes with masks: NumPy, a large output of 2, 4 or 8 bytes an element,
    a boolean condition, `a` an array of the output's dtype and `b` a number (the same bits
    as the branching copy: `a`'s where the condition holds, b cast to the dtype elsewhere)."""
    return (
        xp is np
        and math.prod(out.shape) >= MIN_MASK_ELEMENTS
        and np.dtype(out.dtype).itemsize in (2, 4, 8)
        and np.dtype(getattr(cond, "dtype", None)) == np.bool_
        and getattr(a, "dtype", None) == out.dtype
        and isinstance(b, _NUMBER)
    )


def _where_by_masks(out: Any, cond: Any, a: Any, b: Any, mask: Any) -> None:
    """out = (a & m) | (b & ~m) on the bits, m = 0 - cond: all ones where it holds."""
    np.subtract(0, cond, dtype=mask.dtype, out=mask)
    bits = out.view(mask.dtype)
    np.bitwise_and(a.view(mask.dtype), mask, out=bits)
    b_bits = np.array(b, out.dtype).view(mask.dtype)
    if b_bits:
        np.invert(mask, out=mask)
        np.bitwise_and(mask, b_bits, out=mask)
        np.bitwise_or(bits, mask, out=bits)


class Where(Elementwise):
    """cond ? a : b. With a number b on large NumPy arrays, as bit masks (`_by_masks`): the
    same bits as np.where, without its branch per element."""

    onnx = onnx_op("Where")
    overwrites = frozenset({2})  # b is copied first, then a where the condition holds
    exact_loop = ANY
    expression = "lambda cond, a, b: a if cond else b"

    @classmethod
    def scratch_of(cls, node, xp, alias):
        if not _by_masks(xp, node.out, *node.inputs):
            return []
        return [Scratch(node.out.shape, ops.mask_dtype(node.out.dtype))]

    @staticmethod
    def forward(xp, cond, a, b, out=None, scratch=None):
        spec = out
        if spec is None and xp is np and isinstance(b, _NUMBER):  # infer takes as long as a
            spec = Where.infer(cond, a, b)  # small np.where: only where masks may apply
        if spec is not None and _by_masks(xp, spec, cond, a, b):
            out = empty(xp, spec) if out is None else out
            mask = scratch[0] if scratch else xp.empty(out.shape, ops.mask_dtype(out.dtype))
            if cond.shape == a.shape == out.shape and out.ndim:  # each row on its own
                chunk_threads.share_rows(xp, _where_by_masks, out, cond, a, b, mask)
            else:
                _where_by_masks(out, cond, a, b, mask)
            return out
        if out is None:
            return xp.where(cond, a, b)
        if b is not out:
            xp.copyto(out, b)
        xp.copyto(out, a, where=cond)
        return out

    @staticmethod
    def infer(cond, a, b):
        return Spec(broadcast(cond, a, b).shape, dtype_of(a, b))

    @staticmethod
    def vjp(g, out, cond, a, b):
        return (
            None,
            lambda: ops.sum_to(where(cond, g, 0.0), shape_of(a)),
            lambda: ops.sum_to(where(cond, 0.0, g), shape_of(b)),
        )


# ---------------------------------------------------------------- unary


class Neg(Elementwise):
    ufunc, onnx, symbol = "negative", onnx_op("Neg"), "-"
    expression = "lambda x: -x"
    exact_loop = "float"
    vjp = staticmethod(lambda g, out, x: (lambda: -g,))


class Exp(Elementwise):
    ufunc, onnx, expression = "exp", onnx_op("Exp"), "lambda x: exp(x)"
    vjp = staticmethod(lambda g, out, x: (lambda: g * out,))


class Log(Elementwise):
    ufunc, onnx, expression = "log", onnx_op("Log"), "lambda x: log(x)"
    vjp = staticmethod(lambda g, out, x: (lambda: g / x,))


class Sqrt(Elementwise):
    ufunc, onnx, expression = "sqrt", onnx_op("Sqrt"), "lambda x: sqrt(x)"
    exact_loop = "float"  # IEEE rounds sqrt exactly, like + - * /
    vjp = staticmethod(lambda g, out, x: (lambda: g * 0.5 / out,))


class Tanh(Elementwise):
    ufunc, onnx, expression = "tanh", onnx_op("Tanh"), "lambda x: tanh(x)"
    vjp = staticmethod(lambda g, out, x: (lambda: g * (1.0 - out * out),))


class Abs(Elementwise):
    ufunc, onnx, expression = "absolute", onnx_op("Abs"), "lambda x: abs(x)"
    exact_loop = "float"
    # abs'(0) = 0 (the sign of x), as in PyTorch.
    vjp = staticmethod(lambda g, out, x: (lambda: where(x > 0, g, where(x < 0, -g, 0.0)),))


class Relu(Elementwise):
    onnx = onnx_op("Relu")
    expression = "lambda x: maximum(x, 0)"
    # relu'(0) = 0, as in PyTorch.
    vjp = staticmethod(lambda g, out, x: (lambda: where(x > 0, g, 0.0),))

    @staticmethod
    def forward(xp, x, out=None):
        """np.maximum, over a share of the first axis per thread when large (`chunk_threads`)."""
        if not x.ndim:
            return xp.maximum(x, 0, out=out)
        out = empty(xp, x) if out is None else out
        chunk_threads.share_rows(xp, lambda x, out: xp.maximum(x, 0, out=out), x, out)
        return out


class Sigmoid(Elementwise):
    """where(x >= 0, 1 / (1 + e), e / (1 + e)) with e = exp(-|x|): exp of a non-positive
    number never overflows, whatever the sign of x."""

    onnx = onnx_op("Sigmoid")
    overwrites = frozenset()  # x is read again after the output is written
    scratch = staticmethod(
        lambda out, x: [Scratch(out.shape, out.dtype)] * 2 + [Scratch(out.shape, np.dtype(bool))]
    )
    expression = (
        "lambda x: 1.0 / (1.0 + exp(-abs(x))) if x >= 0 else exp(-abs(x)) / (1.0 + exp(-abs(x)))"
    )

    @staticmethod
    def forward(xp, x, out=None, scratch=None):
        out = empty(xp, x) if out is None else out
        e, denominator, positive = scratch or scratch_arrays(Sigmoid, xp, out, x)
        xp.absolute(x, out=e)
        xp.negative(e, out=e)
        xp.exp(e, out=e)
        xp.add(e, 1.0, out=denominator)
        xp.divide(e, denominator, out=out)
        xp.divide(1.0, denominator, out=denominator)
        xp.greater_equal(x, 0, out=positive)
        xp.copyto(out, denominator, where=positive)
        return out

    vjp = staticmethod(lambda g, out, x: (lambda: g * out * (1.0 - out),))


class Silu(Elementwise):
    """x * sigmoid(x) (swish), the sigmoid computed as Sigmoid computes it."""

    onnx = staticmethod(lambda b, inputs: b.op("Mul", *inputs, b.op("Sigmoid", *inputs)))
    overwrites, scratch = frozenset(), Sigmoid.scratch
    expression = (
        "lambda x: x * (1.0 / (1.0 + exp(-abs(x))) if x >= 0 "
        "else exp(-abs(x)) / (1.0 + exp(-abs(x))))"
    )

    @staticmethod
    def forward(xp, x, out=None, scratch=None):
        out = Sigmoid.forward(xp, x, out=out, scratch=scratch)
        return xp.multiply(x, out, out=out)

    @staticmethod
    def vjp(g, out, x):
        def grad():
            s = sigmoid(x)
            return g * (s * (1.0 + x * (1.0 - s)))

        return (grad,)


class Softplus(Elementwise):
    """log(1 + exp(x)) as max(x, 0) + log1p(exp(-|x|)): no overflow for large x."""

    onnx = onnx_op("Softplus")
    overwrites = frozenset({0})  # x is read last by the maximum that writes the output
    scratch = staticmethod(lambda out, x: [Scratch(out.shape, out.dtype)])
    expression = "lambda x: maximum(x, 0) + log1p(exp(-abs(x)))"

    @staticmethod
    def forward(xp, x, out=None, scratch=None):
        out = empty(xp, x) if out is None else out
        (tail,) = scratch or scratch_arrays(Softplus, xp, out, x)
        xp.absolute(x, out=tail)
        xp.negative(tail, out=tail)
        xp.exp(tail, out=tail)
        xp.log1p(tail, out=tail)
        xp.maximum(x, 0, out=out)
        return xp.add(out, tail, out=out)

    vjp = staticmethod(lambda g, out, x: (lambda: g * sigmoid(x),))


class Elu(Elementwise):
    """x for x > 0, alpha * (exp(x) - 1) elsewhere (expm1 of min(x, 0): no overflow)."""

    onnx = staticmethod(lambda b, inputs, alpha: b.op("Elu", *inputs, alpha=float(alpha)))
    overwrites = frozenset()
    scratch = staticmethod(lambda out, x, alpha: [Scratch(out.shape, np.dtype(bool))])
    expression = "lambda x: x if x > 0 else alpha * expm1(minimum(x, 0))"

    @staticmethod
    def forward(xp, x, alpha, out=None, scratch=None):
        out = empty(xp, x) if out is None else out
        (positive,) = scratch or scratch_arrays(Elu, xp, out, x, alpha=alpha)
        xp.minimum(x, 0, out=out)
        xp.expm1(out, out=out)
        xp.multiply(out, alpha, out=out)
        xp.greater(x, 0, out=positive)
        xp.copyto(out, x, where=positive)
        return out

    @staticmethod
    def vjp(g, out, x, alpha):
        return (lambda: where(x > 0, g, g * (out + alpha)),)


class Pow(Elementwise):
    """x ** exponent for a constant exponent."""

    onnx = staticmethod(lambda b, inputs, exponent: b.op("Pow", *inputs, b.const(exponent)))
    symbol = "**"
    expression = "lambda x: pow(x, exponent)"
    forward = staticmethod(lambda xp, x, exponent, out=None: xp.power(x, exponent, out=out))
    infer = staticmethod(lambda x, exponent: Spec(shape_of(x), dtype_of(x, exponent)))

    @staticmethod
    def vjp(g, out, x, exponent):
        return (lambda: g * (exponent * power(x, exponent - 1)),)


class Cast(Elementwise):
    onnx = staticmethod(lambda b, inputs, dtype: b.op("Cast", *inputs, to=b.onnx_type(dtype)))
    exact_loop = ANY
    expression = "lambda x: x"  # rendered in x's dtype, stored in the output's

    @staticmethod
    def forward(xp, x, dtype, out=None):
        if out is None:
            return x.astype(dtype, copy=False)
        xp.copyto(out, x, casting="unsafe")
        return out

    infer = staticmethod(lambda x, dtype: Spec(shape_of(x), dtype))
    vjp = staticmethod(lambda g, out, x, dtype: (lambda: cast(g, x.dtype),))


# ---------------------------------------------------------------- the ops as functions

# The ops as functions: `ops.add(a, b)` is `apply(Add, a, b)`.
add, sub, mul, div, maximum = map(function, (Add, Sub, Mul, Div, Maximum))
greater, greater_equal, equal, where = map(function, (Greater, GreaterEqual, Equal, Where))
neg, exp, log, sqrt, tanh = map(function, (Neg, Exp, Log, Sqrt, Tanh))
sigmoid, relu, silu, softplus, absolute = map(function, (Sigmoid, Relu, Silu, Softplus, Abs))


def elu(x, alpha: float = 1.0):
    return apply(Elu, x, alpha=float(alpha))


def power(x, exponent: float):
    if not isinstance(exponent, Scalar):
        raise TypeError(f"power takes a constant exponent, got {type(exponent).__name__}")
    return apply(Pow, x, exponent=exponent)


def cast(x, dtype):
    dtype = np.dtype(dtype)
    return x if x.dtype == dtype else apply(Cast, x, dtype=dtype)
