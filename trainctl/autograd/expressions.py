"""Elementwise ops' scalar expressions, rendered in C (CuPy kernels) or Python (Numba loops).

An op's `expression` is a Python lambda over its inputs (attributes by name), e.g.
`lambda a, b: maximum(a, b)`. Both generated kernels must round as the separate ufunc calls
of eager mode do, so rendering follows NumPy's dtype rules step by step: every operation
computes in the dtype NumPy would give its operands (Python numbers and host scalars are
weak: `0.9 * float32` computes in float32), and each operand is cast to it. The semantics
live here once; a `Dialect` only spells them.
"""

from __future__ import annotations

import ast
import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainctl.autograd.graph import HostScalar, Node, Value
from trainctl.autograd.ops import REGISTRY

CTYPES = {
    "float16": "float16", "float32": "float", "float64": "double", "bool": "bool",
    "int8": "signed char", "int16": "short", "int32": "int", "int64": "long long",
    "uint8": "unsigned char",
}  # fmt: skip
OPERATORS = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/",
    ast.Gt: ">", ast.GtE: ">=", ast.Lt: "<", ast.LtE: "<=", ast.Eq: "==",
}  # fmt: skip
MATH = ("exp", "log", "log1p", "expm1", "sqrt", "tanh")


def literal(x: Any) -> str:
    if isinstance(x, float) and not math.isfinite(x):
        return f"float({str(x)!r})"
    return repr(x)


@dataclass(frozen=True)
class Dialect:
    """How C (CuPy kernels) or Python (Numba loops) spells what an expression needs: format
    strings of (condition, a, b), (a, b) and (a), and the prefix of a math function."""

    choose: str
    either: str
    isnan: str
    math: str

    def cast(self, dtype: np.dtype, text: str) -> str:
        if self is C:
            return f"(({CTYPES[dtype.name]}){text})"
        return f"({text} != 0)" if dtype.kind == "b" else f"np.{dtype.name}({text})"


C = Dialect("({} ? {} : {})", "({} || {})", "isnan({})", "")
PYTHON = Dialect("({1} if {0} else {2})", "({} or {})", "({0} != {0})", "np.")


def dtype_of(x: Any) -> np.dtype | type:
    """The dtype a node input computes in: a Value's, or weak for numbers and host scalars."""
    if isinstance(x, Value):
        return x.dtype
    if isinstance(x, bool):
        return np.dtype(bool)
    return float if isinstance(x, (HostScalar, float)) else int


def weak(dtype: Any) -> bool:
    """Whether `dtype` is a Python number's (int or float): weak, as in NumPy 2."""
    return dtype is int or dtype is float


def promote(*dtypes: Any) -> np.dtype | type:
    """NumPy 2's result type; weak only when every operand is."""
    if all(weak(d) for d in dtypes):
        return float if any(d is float for d in dtypes) else int
    return np.result_type(*(d(0) if weak(d) else d for d in dtypes))


def concrete(dtype: Any) -> np.dtype:
    return np.result_type(dtype(0)) if weak(dtype) else dtype


@functools.cache
def _parsed(expression: str) -> ast.Lambda:
    return ast.parse(expression, mode="eval").body


def member_expression(node: Node, names: dict, dialect: Dialect) -> str:
    """The expression for one member, its value in the member's output dtype; `names` maps
    its Value and HostScalar inputs to text."""
    env = {}
    lam = _parsed(node.op.expression)
    for arg, x in zip(lam.args.args, node.inputs, strict=True):
        text = names[x] if isinstance(x, (Value, HostScalar)) else _number(x)
        env[arg.arg] = (text, dtype_of(x))
    text, dtype = _Renderer(dialect, node.attrs).render(lam.body, env)
    out = node.out.dtype
    return text if dtype == out else dialect.cast(out, text)


def _number(x: Any) -> str:
    return str(int(x)) if isinstance(x, bool) else literal(x)


class _Renderer:
    """Renders an expression AST into text plus the dtype NumPy would compute it in."""

    def __init__(self, dialect: Dialect, attrs: dict) -> None:
        self.d, self.attrs = dialect, attrs

    def cast(self, rendered: tuple, dtype: Any) -> str:
        text, have = rendered
        return text if have == dtype else self.d.cast(concrete(dtype), text)

    def render(self, e: ast.expr, env: dict) -> tuple[str, Any]:
        d = self.d
        if isinstance(e, ast.Name):
            if e.id in env:
                return env[e.id]
            value = self.attrs[e.id]
            return _number(value), dtype_of(value)
        if isinstance(e, ast.Constant):
            return _number(e.value), dtype_of(e.value)
        if isinstance(e, ast.UnaryOp):  # negation
            text, dtype = self.render(e.operand, env)
            return f"(-{text})", dtype
        if isinstance(e, (ast.BinOp, ast.Compare)):
            binary = isinstance(e, ast.BinOp)
            op, right = (e.op, e.right) if binary else (e.ops[0], e.comparators[0])
            a, b = self.render(e.left, env), self.render(right, env)
            dtype = promote(a[1], b[1])
            if isinstance(op, ast.Div) and concrete(dtype).kind not in "fc":
                dtype = np.dtype(np.float64)  # true division
            text = f"({self.cast(a, dtype)} {OPERATORS[type(op)]} {self.cast(b, dtype)})"
            return text, (dtype if binary else np.dtype(bool))
        if isinstance(e, ast.IfExp):
            test = self.render(e.test, env)[0]
            a, b = self.render(e.body, env), self.render(e.orelse, env)
            dtype = promote(a[1], b[1])
            return d.choose.format(test, self.cast(a, dtype), self.cast(b, dtype)), dtype
        if isinstance(e, ast.Call):
            return self.call(e.func.id, [self.render(a, env) for a in e.args])
        raise NotImplementedError(ast.dump(e))

    def call(self, function: str, args: list[tuple]) -> tuple[str, Any]:
        d = self.d
        if function in self.attrs:  # an op named by an attribute: its expression, inlined
            lam = _parsed(REGISTRY[self.attrs[function]].expression)
            env = {a.arg: value for a, value in zip(lam.args.args, args, strict=True)}
            return self.render(lam.body, env)
        dtype = promote(*(dtype for _, dtype in args))
        if function in ("maximum", "minimum"):  # NumPy's: a NaN in either operand wins
            a, b = (self.cast(arg, dtype) for arg in args)
            keep = f"{a} {'>=' if function == 'maximum' else '<='} {b}"
            return d.choose.format(d.either.format(keep, d.isnan.format(a)), a, b), dtype
        if function in MATH and (weak(dtype) or dtype.kind not in "fc"):
            dtype = np.result_type(concrete(dtype), np.float16)  # NumPy's float for integers
        prefix = "" if function == "pow" else d.math  # Python's pow, for Numba
        return f"{prefix}{function}({', '.join(self.cast(arg, dtype) for arg in args)})", dtype
