"""What every op shares: the `Op` class and its facts, `apply`, `Operand`, shape helpers.

An op is one class. `forward(xp, *arrays, **attrs, out=None)` computes on NumPy or CuPy
arrays, into `out` when given (graph mode's planned buffers) or into a new array. `infer`
gives the output `Spec` from shapes and dtypes alone; `vjp(g, out, *inputs, **attrs)` returns
one thunk per input, written with these same ops so it runs on eager tensors and symbolic
graph values alike. The class attributes below are the facts the graph back end reads.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from trainctl.autograd import ops as _ops  # the functions the operators call (a cycle)
from trainctl.errors import ShapeError

Thunk = Callable[[], Any]
Scalar = (int, float, bool)
ANY = "any"  # `overwrites`: every input position


class Spec(NamedTuple):
    """What graph mode knows of a value before it has data."""

    shape: tuple[int, ...]
    dtype: np.dtype


class Scratch(NamedTuple):
    """A temporary array an out= forward needs. `private`: a buffer of its own, zeroed once
    and never shared (a padded image whose border stays zero), else one from the pool."""

    shape: tuple[int, ...]
    dtype: np.dtype
    private: bool = False


class Op:
    """A primitive. Subclasses set `forward`, `infer` and `vjp` as static methods; the class
    itself is the op (never instantiated), named in snake case (`MaxPool2d` -> max_pool2d).

    Facts the graph back end reads (passes, planner, code generator, numerics checks):

    - `kind`: "elementwise" (fusable, has `expression`), "view" (returns a view of its input;
      the planner gives it no storage), "reduction" or "other".
    - `overwrites`: input positions `forward(..., out=)` may be handed as `out` itself (the
      exact same memory), or ANY; the planner reuses a dying input's buffer only there.
    - `scratch(out, *inputs, **attrs)`: the `Scratch` arrays `forward(..., scratch=)` uses.
    - `expression`: for elementwise ops, one element as a Python lambda over the inputs (attrs
      by name): the one source the CuPy kernels and Numba loops are rendered from.
    - `exact_loop`: None, or the dtypes ("float" or ANY) in which the rendered Numba loop
      rounds exactly as `forward` (IEEE arithmetic only: no transcendentals).
    - `ufunc`: the `xp` ufunc the op is: its forward (unless it declares one), and what
      generated code calls directly; `reduces`: the ufunc whose `.reduce` a reduction is
      (NumPy calls it directly, at half the cost).
    - `prepare(xp, *inputs, **attrs)`: constant arrays computed once per compile and passed
      to `forward` by keyword (an arange), instead of at every call.
    - `storage(*inputs, **attrs)`: the Spec of the array forward writes when it is not the
      output's own (col2im's padded image), and `value_of(storage, **attrs)` the output in it.
    - `capturable(*inputs)`: a forward a CUDA graph can capture, where `forward` cannot be.
    - `label_input`: the input holding class labels that forward range-checks unless passed
      `checked=True` (a captured program's host checks them first).
    - `symbol`: the Python operator of a host-number op (the learning rate's arithmetic).
    - `onnx(b, inputs, **attrs)`: the op as ONNX nodes, written with an
      `export.onnx_builder.OnnxBuilder` `b` (`inputs`: the ONNX names of its operands); it
      returns its output's name. An op an inference graph can hold needs one to export.
    """

    differentiable = True
    kind = "other"
    overwrites: frozenset[int] | str = frozenset()
    scratch: Callable[..., list[Scratch]] | None = None
    expression: str | None = None
    exact_loop: str | None = None
    ufunc: str | None = None
    reduces: str | None = None
    prepare: Callable[..., dict] | None = None
    symbol: str | None = None
    storage: Callable[..., Spec | None] | None = None
    value_of: Callable[..., Any] | None = None
    capturable: Callable[..., Any] | None = None
    label_input: int | None = None
    name: str

    def __init_subclass__(cls, register: bool = True) -> None:
        cls.name = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
        if "ufunc" in cls.__dict__ and "forward" not in cls.__dict__:
            ufunc = cls.ufunc
            cls.forward = staticmethod(lambda xp, *xs, out=None: getattr(xp, ufunc)(*xs, out=out))
        if register:
            REGISTRY[cls.name] = cls

    @classmethod
    def overwritable(cls, node: Any, xp: Any) -> set[int]:
        """The input positions of `node` whose buffer its output may take over."""
        if cls.overwrites == ANY:
            return set(range(len(node.inputs)))
        return set(cls.overwrites)

    @classmethod
    def scratch_of(cls, node: Any, xp: Any, alias: int | None) -> list[Scratch]:
        """The scratch `node` needs, `alias` the input its output overwrites (if any)."""
        if cls.scratch is None:
            return []
        return cls.scratch(Spec(node.out.shape, node.out.dtype), *node.inputs, **node.attrs)


REGISTRY: dict[str, type[Op]] = {}


def onnx_op(op_type: str) -> Any:
    """An `onnx` lowering: the ONNX op of the same meaning, on the same operands."""
    return staticmethod(lambda b, inputs: b.op(op_type, *inputs))


def onnx_reduce(op_type: str) -> Any:
    """An `onnx` lowering of a reduction over `axes` (ONNX takes the axes as an input)."""
    return staticmethod(
        lambda b, inputs, axes, keepdims: b.op(
            op_type, *inputs, b.ints(axes), keepdims=int(keepdims)
        )
    )


def empty(xp: Any, spec: Any) -> Any:
    return xp.empty(spec.shape, dtype=spec.dtype)


def scratch_arrays(op: type[Op], xp: Any, out: Any, *inputs: Any, **attrs: Any) -> list[Any]:
    """New scratch arrays for an eager call of `op`'s forward (graph mode passes its own)."""
    return [empty(xp, s) for s in op.scratch(Spec(out.shape, out.dtype), *inputs, **attrs)]


def into(xp: Any, out: Any, result: Any) -> Any:
    """`result`, copied into `out` when the caller gave one."""
    if out is None:
        return result
    xp.copyto(out, result)
    return out


def _method(name: str, reflected: bool = False) -> Callable[..., Any]:
    """A method of `Operand` that calls `ops.<name>` with the operand first (second when
    `reflected`: `2 - x` is `sub(2, x)`)."""
    if reflected:
        return lambda self, other: getattr(_ops, name)(other, self)
    return lambda self, *args, **kwargs: getattr(_ops, name)(self, *args, **kwargs)


class Operand:
    """What tensors and graph values share: Python operators that call the ops.

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

    __add__, __radd__ = _method("add"), _method("add", reflected=True)
    __sub__, __rsub__ = _method("sub"), _method("sub", reflected=True)
    __mul__, __rmul__ = _method("mul"), _method("mul", reflected=True)
    __truediv__, __rtruediv__ = _method("div"), _method("div", reflected=True)
    __matmul__, __rmatmul__ = _method("matmul"), _method("matmul", reflected=True)
    __gt__, __lt__ = _method("greater"), _method("greater", reflected=True)
    __ge__, __le__ = _method("greater_equal"), _method("greater_equal", reflected=True)
    __pow__, __getitem__ = _method("power"), _method("getitem")
    __neg__, exp, log, sqrt = _method("neg"), _method("exp"), _method("log"), _method("sqrt")
    tanh, sigmoid, relu = _method("tanh"), _method("sigmoid"), _method("relu")
    sum, max, mean = _method("reduce_sum"), _method("reduce_max"), _method("mean")
    abs, astype = _method("absolute"), _method("cast")

    def reshape(self, *shape):
        return _ops.reshape(self, shape[0] if len(shape) == 1 else shape)

    def transpose(self, *axes):
        return _ops.transpose(self, axes[0] if len(axes) == 1 else axes or None)

    @property
    def T(self):
        return _ops.transpose(self)


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


def function(op: type[Op]) -> Callable[..., Any]:
    """`op` as a function of its operands: what `ops.add` and friends are."""
    return functools.partial(apply, op)


# ---------------------------------------------------------------- shape and dtype helpers


def shape_of(x: Any) -> tuple[int, ...]:
    return () if isinstance(x, Scalar) else tuple(x.shape)


def dtype_of(*xs: Any) -> np.dtype:
    return np.result_type(*(x if isinstance(x, Scalar) else x.dtype for x in xs))


def broadcast(*xs: Any) -> Spec:
    try:
        shape = np.broadcast_shapes(*(shape_of(x) for x in xs))
    except ValueError:
        raise ShapeError(
            f"shapes {[shape_of(x) for x in xs]} cannot be broadcast together"
        ) from None
    return Spec(shape, dtype_of(*xs))


def same(x: Any, **_: Any) -> Spec:
    return Spec(shape_of(x), x.dtype)


def normalize_axes(axis: Any, ndim: int) -> tuple[int, ...]:
    """`None`, an int or a sequence of ints -> a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for a in axes:
        if not -ndim <= a < ndim:
            raise ShapeError(f"axis {a} is out of range for a {ndim}-d operand")
    return tuple(sorted(a % ndim for a in axes))


def one_axis(axis: int, ndim: int) -> int:
    """One axis, made non-negative; out of range is an error, not a silent wrap."""
    return normalize_axes(int(axis), ndim)[0]


def reduced(shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if i in axes else n for i, n in enumerate(shape))
    return tuple(n for i, n in enumerate(shape) if i not in axes)
