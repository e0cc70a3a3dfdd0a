"""One expression per member of a fused elementwise chain, in C (CuPy kernels) or in Python
(Numba loops on the CPU).

Both generated kernels must round as the separate ufunc calls of eager mode do, so every
operand is cast to the dtype NumPy would compute in (Python numbers and host scalars are weak:
`0.9 * float32` computes in float32) before the operation. The semantics live here once; a
`Dialect` only spells them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainctl.autograd.graph import HostScalar, Node, Value

BINARY = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
COMPARE = {"greater": ">", "greater_equal": ">=", "equal": "=="}


def literal(x: Any) -> str:
    if isinstance(x, float) and not math.isfinite(x):
        return f"float({str(x)!r})"
    return repr(x)


@dataclass(frozen=True)
class Dialect:
    name: str

    def cast(self, dtype: np.dtype, text: str) -> str:
        if self.name == "c":
            return f"(({CTYPES[dtype.name]}){text})"
        if dtype.kind == "b":
            return f"({text} != 0)"
        return f"np.{dtype.name}({text})"

    def choose(self, condition: str, a: str, b: str) -> str:
        if self.name == "c":
            return f"({condition} ? {a} : {b})"
        return f"({a} if {condition} else {b})"

    def either(self, a: str, b: str) -> str:
        return f"({a} || {b})" if self.name == "c" else f"({a} or {b})"

    def isnan(self, a: str) -> str:
        return f"isnan({a})" if self.name == "c" else f"({a} != {a})"

    def call(self, function: str, a: str) -> str:
        return f"{function}({a})" if self.name == "c" else f"np.{function}({a})"


C = Dialect("c")
PYTHON = Dialect("python")

CTYPES = {
    "float16": "float16",
    "float32": "float",
    "float64": "double",
    "bool": "bool",
    "int8": "signed char",
    "int16": "short",
    "int32": "int",
    "int64": "long long",
    "uint8": "unsigned char",
}


def compute_dtype(operands: tuple) -> np.dtype:
    """The dtype NumPy computes `operands` in: host scalars count as weak Python floats."""
    weak = [0.0 if isinstance(x, HostScalar) else x for x in operands]
    if not any(isinstance(x, Value) for x in weak):
        return np.dtype(np.float64)
    return np.result_type(*(x.dtype if isinstance(x, Value) else x for x in weak))


def member_expression(node: Node, names: dict, dialect: Dialect) -> str:
    """The expression for one member; `names` maps its Value and HostScalar inputs to text."""
    name, operands, out_dtype = node.op.name, node.inputs, node.out.dtype
    compute = compute_dtype(operands)

    def operand(x: Any) -> str:
        if isinstance(x, (Value, HostScalar)):
            return names[x]
        return str(int(x)) if isinstance(x, bool) else literal(x)

    def at(x: Any) -> str:
        return dialect.cast(compute, operand(x))

    zero = dialect.cast(compute, "0")
    if name in BINARY:
        return f"({at(operands[0])} {BINARY[name]} {at(operands[1])})"
    if name in COMPARE:
        return f"({at(operands[0])} {COMPARE[name]} {at(operands[1])})"
    if name in ("maximum", "relu"):  # NumPy's maximum: a NaN in either operand wins
        a, b = at(operands[0]), (at(operands[1]) if name == "maximum" else zero)
        return dialect.choose(dialect.either(f"{a} >= {b}", dialect.isnan(a)), a, b)
    if name == "where":
        cond, a, b = operands
        return dialect.choose(
            operand(cond), dialect.cast(out_dtype, operand(a)), dialect.cast(out_dtype, operand(b))
        )
    if name == "neg":
        return f"(-{at(operands[0])})"
    if name == "abs":
        return dialect.call("abs", at(operands[0]))
    if name in ("exp", "log", "sqrt", "tanh"):
        return dialect.call(name, at(operands[0]))
    if name == "pow":
        exponent = dialect.cast(compute, literal(float(node.attrs["exponent"])))
        return f"pow({at(operands[0])}, {exponent})"
    if name == "cast":
        return dialect.cast(out_dtype, operand(operands[0]))
    if name == "select":
        x, y, a = operands
        pair = compute_dtype((x, y))
        condition = (
            f"({dialect.cast(pair, operand(x))} {COMPARE[node.attrs['compare']]} "
            f"{dialect.cast(pair, operand(y))})"
        )
        return dialect.choose(
            condition, dialect.cast(out_dtype, operand(a)), dialect.cast(out_dtype, "0")
        )
    if name == "sigmoid":
        x = at(operands[0])
        e = dialect.call("exp", f"-abs({x})")
        one = dialect.cast(compute, "1.0")
        return dialect.choose(f"{x} >= 0", f"{one} / ({one} + {e})", f"{e} / ({one} + {e})")
    raise NotImplementedError(name)
