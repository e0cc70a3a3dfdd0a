"""Numba loops for elementwise chains on the CPU: one pass over memory instead of one ufunc
call (and one pass) per member.

NumPy cannot run `v = 0.9 * v + g` or ReLU's backward mask as one pass: each ufunc reads and
writes whole arrays, and every call costs microseconds of dispatch. The `jit` pass turns chains
of plain IEEE arithmetic into `loop` nodes; this module writes each as a loop nest over the
output's index and compiles it with Numba: no fastmath (so no FMA contraction), NumPy's error
model (x / 0 is inf, not an exception), every operand cast as NumPy would cast it. Each element
is then rounded exactly as the separate ufuncs round it. Transcendentals (exp, log, tanh, pow,
sigmoid) are left to NumPy: Numba's libm and NumPy's SIMD routines may differ in the last bit.
So are maximum and ReLU: NumPy's SIMD and scalar loops disagree on the sign of max(0, -0).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from trainctl.autograd import chunk_threads
from trainctl.autograd.expressions import PYTHON, concrete, dtype_of, member_expression, promote
from trainctl.autograd.graph import HostScalar, Node, Value
from trainctl.autograd.kernels import body_of
from trainctl.autograd.ops import ANY

# A loop is compiled only for outputs of at least this many elements. Compiling costs a first
# step about 1.5 s (Numba and LLVM imported, ~100 MiB, then tens of ms per loop) and saves
# per step (measured on 2 cores, Adam MLPs): 6 us at 256 elements, 12 us at 16k, 61 us at
# 64k, 345 us at 256k. Below 64k elements that pays back only after 26,000+ steps, longer
# than most runs of such small models, so those chains stay with NumPy's ufuncs.
MIN_LOOP_ELEMENTS = 65_536

_DTYPES = frozenset({np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.bool_)})

_compiled: dict[str, Any] = {}  # loop source -> Numba dispatcher, shared by every graph


def loop_supports(node: Node) -> bool:
    """Whether `node` (a fused chain or one elementwise node) can be one exact Numba loop, and
    is large enough to pay for compiling it (MIN_LOOP_ELEMENTS): only IEEE arithmetic on
    float32, float64 and bool, and every array it reads shaped as its output (broadcasting
    stays with NumPy)."""
    shape = node.out.shape
    if not shape or math.prod(shape) < MIN_LOOP_ELEMENTS:
        return False
    for member in body_of(node):
        exact = member.op.exact_loop  # the op's rounding in a loop is NumPy's: ANY or "float"
        if exact is None or member.out.dtype not in _DTYPES:
            return False
        computes_in = concrete(promote(*(dtype_of(x) for x in member.inputs)))
        if exact != ANY and computes_in.kind != "f":
            return False
        for x in member.inputs:
            if isinstance(x, Value) and (x.dtype not in _DTYPES or x.shape != shape):
                return False
            if not isinstance(x, (Value, HostScalar, bool, int, float)):
                return False
    return True


def loop_source(node: Node, slots: list[int]) -> str:
    """`def loop(a0, a1, ...)`: the chain for each index of the output `a0`, written once.

    `slots[i]` is the parameter that node input i arrives in. An input that is the output's
    own array reads `a0`: two parameters for one array would make LLVM assume they may
    overlap and give up vectorizing the loop.
    """
    names: dict[Any, str] = {}
    index = ", ".join(f"i{axis}" for axis in range(len(node.out.shape)))
    for leaf, slot in zip(node.inputs, slots, strict=True):
        names[leaf] = f"a{slot}[{index}]" if isinstance(leaf, Value) else f"a{slot}"
    lines = [f"def loop({', '.join(f'a{slot}' for slot in range(max(slots, default=0) + 1))}):"]
    indent = "    "
    for axis in range(len(node.out.shape)):
        lines.append(f"{indent}for i{axis} in range(a0.shape[{axis}]):")
        indent += "    "
    # Locals are numbered by position, not by value id: the same chain elsewhere in a graph
    # (each step of an unrolled loop) is the same source, compiled once.
    for position, member in enumerate(body_of(node)):
        names[member.out] = f"v{position}"
        lines.append(f"{indent}v{position} = {member_expression(member, names, PYTHON)}")
    lines.append(f"{indent}a0[{index}] = {names[node.out]}")
    return "\n".join(lines) + "\n"


def compile_loop(node: Node, slots: list[int], arguments: list[Any]) -> Callable[..., None]:
    """The compiled loop for `node`, typed for `arguments` (the output array first; a float
    stands for a host scalar), so the first replay does not pay for compilation."""
    import numba

    source = loop_source(node, slots)
    dispatcher = _compiled.get(source)
    if dispatcher is None:
        namespace: dict[str, Any] = {"np": np}
        exec(compile(source, "<trainctl loop>", "exec"), namespace)  # noqa: S102
        dispatcher = _compiled[source] = numba.njit(error_model="numpy", nogil=True)(
            namespace["loop"]
        )
    types = [numba.float64 if isinstance(a, float) else numba.typeof(a) for a in arguments]
    dispatcher.compile(tuple(types))
    if arguments[0].size < chunk_threads.MIN_SHARED_ELEMENTS:
        return dispatcher
    # The arrays are shaped as the output (`loop_supports`): a share of their rows per thread.
    return lambda *args: chunk_threads.share_rows(np, dispatcher, *args)
