"""Every elementwise op's scalar `expression`, the one source of the CuPy kernels and Numba
loops: rendered in Python and run element by element, it gives what the op's forward gives
(bit for bit where the op is exact in loops); rendered in C it is well-formed C."""

import numpy as np
import pytest

from trainctl.autograd import ops
from trainctl.autograd.expressions import PYTHON, C, member_expression
from trainctl.autograd.graph import Graph
from trainctl.autograd.kernels import SELECT
from trainctl.autograd.passes import lower_select
from trainctl.backend import CPU

EDGES = [0.0, -0.0, 1.0, -2.5, 3e38, -3e38, np.inf, -np.inf, np.nan, 1e-45, 7.0, 0.1, -40.0]
F32, BOOL = np.dtype(np.float32), np.dtype(bool)

CASES = {  # name: (input dtypes, the op applied to traced inputs)
    "add": ((F32, F32), lambda x, y: x + y),
    "sub": ((F32,), lambda x: 0.9 - x),  # a Python number is weak: computed in float32
    "mul": ((F32, F32), lambda x, y: x * y),
    "div": ((F32, F32), lambda x, y: x / y),
    "maximum": ((F32, F32), ops.maximum),
    "greater": ((F32, F32), ops.greater),
    "greater_equal": ((F32, F32), ops.greater_equal),
    "equal": ((F32, F32), ops.equal),
    "where": ((BOOL, F32, F32), ops.where),
    "neg": ((F32,), ops.neg),
    "exp": ((F32,), ops.exp),
    "log": ((F32,), ops.log),
    "sqrt": ((F32,), ops.sqrt),
    "tanh": ((F32,), ops.tanh),
    "abs": ((F32,), ops.absolute),
    "relu": ((F32,), ops.relu),
    "sigmoid": ((F32,), ops.sigmoid),
    "silu": ((F32,), ops.silu),
    "softplus": ((F32,), ops.softplus),
    "elu": ((F32,), lambda x: ops.elu(x, 0.5)),
    "pow": ((F32,), lambda x: ops.power(x, 3.0)),
    "cast": ((F32,), lambda x: ops.cast(x, np.float64)),
    "select": ((F32, F32, F32), lambda x, y, a: ops.where(ops.greater(x, y), a, 0.0)),
}


def _node(name):
    dtypes, build = CASES[name]
    graph = Graph(CPU)
    inputs = [graph.add_input(f"x{i}", ops.Spec((len(EDGES),), d)) for i, d in enumerate(dtypes)]
    graph.outputs["out"] = build(*inputs)
    node = lower_select(graph).nodes[-1]
    return node, inputs


def _arrays(inputs):
    """The edge values for the first input, shuffled for the others (pairs of every kind)."""
    rng = np.random.default_rng(0)
    edges = np.array(EDGES, np.float32)
    return {
        x: (rng.permutation(edges) if i else edges).astype(x.dtype) for i, x in enumerate(inputs)
    }


def test_every_elementwise_op_has_a_case():
    elementwise = {name for name, op in ops.REGISTRY.items() if op.kind == "elementwise"}
    assert elementwise | {SELECT.name} == set(CASES)
    assert all(ops.REGISTRY[name].expression for name in elementwise)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_python_rendering_computes_what_forward_computes(name):
    node, inputs = _node(name)
    assert node.op.name == name
    names = {x: f"a{i}" for i, x in enumerate(inputs)}
    expression = member_expression(node, names, PYTHON)
    element = eval(f"lambda {', '.join(names.values())}: {expression}", {"np": np})  # noqa: S307
    values = _arrays(inputs)
    with np.errstate(all="ignore"):
        got = [element(*(values[x][k] for x in inputs)) for k in range(len(EDGES))]
        got = np.array(got, node.out.dtype)
        arrays = [values.get(x, x) if isinstance(x, type(inputs[0])) else x for x in node.inputs]
        want = node.op.forward(np, *arrays, **node.attrs)
    nan = np.isnan(want) if want.dtype.kind == "f" else np.zeros(want.shape, bool)
    assert (np.isnan(got) == nan).all() if want.dtype.kind == "f" else True
    if node.op.exact_loop:
        assert got[~nan].tobytes() == want[~nan].tobytes(), expression
    else:  # NumPy's scalar and SIMD transcendentals may differ in the last bit
        np.testing.assert_allclose(got[~nan], want[~nan], rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_c_rendering_is_c(name):
    node, _ = _node(name)
    names = {x: f"in{i}" for i, x in enumerate(node.inputs)}
    text = member_expression(node, names, C)
    assert text.count("(") == text.count(")")
    assert not any(word in text for word in ("np.", " if ", " or ", " else ")), text
    if node.out.dtype == F32 and any(isinstance(x, float) for x in node.inputs):
        assert "((float)" in text  # a Python number computes in the array's float32
