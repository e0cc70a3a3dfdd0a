"""The jit pass and its Numba loops: which chains become loops, and that a loop gives every
element exactly the bits the separate ufunc calls give it, edge values included."""

import numpy as np
import pytest
from graph_helpers import run_graph

from trainctl.autograd import ops
from trainctl.autograd.compile import compile_graph
from trainctl.autograd.graph import Graph
from trainctl.autograd.kernels import FUSED, LOOP, SELECT
from trainctl.autograd.loops import loop_source, loop_supports
from trainctl.autograd.ops import Spec
from trainctl.autograd.passes import PIPELINE, fuse_elementwise, jit_loops, lower_select
from trainctl.backend import CPU

EDGES = [0.0, -0.0, 1.0, -2.5, 3e38, -3e38, np.inf, -np.inf, np.nan, 1e-45, 7.0, 0.1]


def _graph(shape, dtype, count):
    graph = Graph(CPU)
    spec = Spec(shape, np.dtype(dtype))
    return graph, [graph.add_input(f"x{i}", spec) for i in range(count)]


def _edge_arrays(dtype, count):
    """Every pairing of the edge values, as `count` arrays of one shape."""
    grid = np.array(np.meshgrid(*[EDGES] * count, indexing="ij"))
    return [a.reshape(-1, len(EDGES)).astype(dtype) for a in grid]


def _ops(graph):
    return [node.op.name for node in graph.nodes]


def _assert_bits_equal(a, b):
    """The same bits everywhere, -0.0 and +0.0 told apart; NaN is NaN (IEEE leaves open which
    operand's sign and payload a NaN result carries, and LLVM may swap the operands of +)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    nan = np.isnan(a)
    assert (nan == np.isnan(b)).all()
    assert a[~nan].tobytes() == b[~nan].tobytes(), np.flatnonzero((a != b) & ~nan)


CHAINS = {
    "arithmetic": (2, lambda x, y: (x * 0.9 + y) / (y - 1.5)),
    "neg, abs": (1, lambda x: -(x * 3.0).abs() + x),
    "sqrt": (2, lambda x, y: x / (ops.sqrt(y) + 1e-8)),
    "where": (2, lambda x, y: ops.where(ops.greater(x, y), x, y) + 1.0),
    "comparisons": (2, lambda x, y: ops.cast(ops.greater_equal(x, y), x.dtype) - y),
    "equal": (2, lambda x, y: ops.cast(ops.equal(x, y), x.dtype) * y),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chain", CHAINS)
def test_a_loop_gives_the_bits_of_the_ufunc_calls(chain, dtype):
    count, build = CHAINS[chain]
    arrays = _edge_arrays(dtype, count)
    graph, inputs = _graph(arrays[0].shape, dtype, count)
    graph.outputs["out"] = build(*inputs)
    fused = fuse_elementwise(graph)
    looped = jit_loops(fused)
    assert _ops(looped) == ["loop"], _ops(fused)
    with np.errstate(all="ignore"):
        (want,) = run_graph(fused, *arrays)
        (got,) = run_graph(looped, *arrays)
    _assert_bits_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_select_loop_keeps_nan_and_inf_and_writes_plus_zero(dtype):
    a, x = _edge_arrays(dtype, 2)
    graph, (ga, gx) = _graph(a.shape, dtype, 2)
    graph.outputs["out"] = ops.where(ops.greater(gx, 0), ga, 0)
    selected = lower_select(graph)
    assert [n.op for n in selected.nodes if n.op is SELECT]
    looped = jit_loops(selected)
    assert "loop" in _ops(looped) and "select" not in _ops(looped)
    (want,) = run_graph(selected, a, x)
    (got,) = run_graph(looped, a, x)
    _assert_bits_equal(got, want)


def test_the_momentum_update_runs_in_place_over_state_with_a_host_scalar():
    shape = (5, 7)
    graph, (buf, g, p) = _graph(shape, np.float32, 3)
    lr = graph.add_scalar("lr", 0.1)
    new_buf = 0.9 * buf + g
    graph.outputs.update(buf=new_buf, p=p - lr * new_buf)
    looped = jit_loops(fuse_elementwise(graph))
    assert [n.op for n in looped.nodes] == [LOOP, LOOP]
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]
    for a, b in zip(
        run_graph(looped, *arrays, scalars=(0.037,)),
        run_graph(graph, *arrays, scalars=(0.037,), plan_memory=False),
        strict=True,
    ):
        _assert_bits_equal(a, b)


def test_an_input_shared_with_the_output_is_passed_once():
    graph, (x, y) = _graph((8, 8), np.float32, 2)
    graph.outputs["out"] = (x @ y) * 0.5 + y  # the planner writes the result over x @ y
    looped = jit_loops(fuse_elementwise(graph))
    assert _ops(looped) == ["matmul", "loop"]
    program = compile_graph(looped, {})
    (call,) = [line.strip() for line in program.source.splitlines() if "loop" in line]
    assert call.startswith("loop") and call.endswith("(view1, input1)"), program.source
    assert "xp.matmul(input0, input1, out=view1)" in program.source
    source = loop_source(looped.nodes[1], [0, 1])
    assert "a0[i0, i1] = " in source and "np.float32(0.5)" in source
    rng = np.random.default_rng(0)
    x_, y_ = (rng.standard_normal((8, 8)).astype(np.float32) for _ in range(2))
    (got,) = run_graph(looped, x_, y_)
    (want,) = run_graph(graph, x_, y_, plan_memory=False)
    _assert_bits_equal(got, want)


def test_jit_leaves_what_a_loop_cannot_do_exactly():
    graph, (x,) = _graph((4, 3), np.float32, 1)
    bias = graph.add_input("bias", Spec((3,), np.dtype(np.float32)))
    broadcast = (x + bias) * 2.0  # reads a (3,) array in a (4, 3) loop: stays NumPy's
    transcendental = ops.exp(x * 2.0) + 1.0  # Numba's exp may differ in the last bit
    maximum = ops.relu(x - 1.0) * 2.0  # NumPy's own loops disagree on max(0, -0)
    graph.outputs.update(a=broadcast, b=transcendental, c=maximum)
    fused = fuse_elementwise(graph)
    assert [n.op for n in fused.nodes] == [FUSED, FUSED, FUSED]
    assert not any(loop_supports(node) for node in fused.nodes)
    assert jit_loops(fused).nodes == fused.nodes


def test_jit_is_the_last_pass_and_leaves_other_nodes_alone():
    assert PIPELINE[-1] == "jit"
    graph, (x, y) = _graph((4, 3), np.float32, 2)
    graph.outputs["out"] = (x @ ops.transpose(y, (1, 0))).sum() * 2.0
    assert jit_loops(graph).nodes == graph.nodes


@pytest.mark.parametrize(("shape", "looped"), [((255, 256), False), ((256, 256), True)])
def test_only_chains_large_enough_to_repay_compiling_become_loops(monkeypatch, shape, looped):
    """At the default MIN_LOOP_ELEMENTS (the conftest sets 0 for every other test)."""
    from trainctl.autograd import loops

    monkeypatch.setattr(loops, "MIN_LOOP_ELEMENTS", 65_536)
    graph, (x, y) = _graph(shape, np.float32, 2)
    graph.outputs["out"] = (x * 0.9 + y) / (y - 1.5)
    lowered = jit_loops(fuse_elementwise(graph))
    assert (LOOP.name in _ops(lowered)) == looped
