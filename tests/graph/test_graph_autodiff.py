"""Autodiff on the graph: the backward graph built from the ops' vjp rules gives the same
gradients as eager backward(), bit for bit (the same rules, summed in the same order)."""

import numpy as np
import pytest
from graph_helpers import run_graph
from kinks import KINKS, Kink

from trainctl.autograd import Tensor, ops
from trainctl.autograd.graph import Graph, TracingError, gradients, tracing
from trainctl.autograd.ops import Spec
from trainctl.autograd.passes import optimize
from trainctl.backend import CPU

F32 = np.dtype(np.float32)


def _reuse_three_times(a, b):
    h = a * b
    return ((h * h) / (ops.exp(h) + 1.0) + h).sum()


def _broadcast_and_matmul(a, b):
    return ops.tanh(a @ b + b.sum(axis=0)).mean()


def _max_with_ties(a, b):
    return (ops.reduce_max(a * 0.0 + ops.relu(a), axis=1) * b[:, 0]).sum()


FUNCTIONS = {
    "reuse": (_reuse_three_times, (4, 3), (4, 3)),
    "broadcast_matmul": (_broadcast_and_matmul, (4, 3), (3, 3)),
    "max_ties": (_max_with_ties, (4, 3), (4, 3)),
}


def _eager_grads(fn, a, b):
    ta, tb = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    fn(ta, tb).backward()
    return ta.grad.numpy(), tb.grad.numpy()


def _graph_grads(fn, a, b, plan_memory):
    graph = Graph(CPU)
    va = graph.add_input("a", Spec(a.shape, F32), requires_grad=True)
    vb = graph.add_input("b", Spec(b.shape, F32), requires_grad=True)
    ga, gb = gradients(fn(va, vb), [va, vb])
    graph.outputs.update(ga=ga, gb=gb)
    return run_graph(graph, a, b, plan_memory=plan_memory)


@pytest.mark.parametrize("plan_memory", [False, True])
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_graph_gradients_equal_eager_gradients(name, plan_memory):
    fn, a_shape, b_shape = FUNCTIONS[name]
    rng = np.random.default_rng(3)
    a = rng.standard_normal(a_shape).astype(np.float32)
    b = rng.standard_normal(b_shape).astype(np.float32)
    if name == "max_ties":
        a[:, 1] = a[:, 0]  # ties share the gradient
    for got, want in zip(_graph_grads(fn, a, b, plan_memory), _eager_grads(fn, a, b), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kink", KINKS, ids=lambda k: k.name)
def test_graph_gradients_at_kinks_equal_eager_and_the_analytic_value(kink: Kink, dtype):
    """Through the whole pass pipeline (selects, fusion, Numba loops), as a training step runs."""
    arrays = kink.arrays(dtype)
    with tracing(CPU) as tracer:  # a loss's targets are eager constants, captured by the trace
        graph = tracer.graph
        values = [
            graph.add_input(f"x{i}", Spec(a.shape, np.dtype(dtype)), requires_grad=True)
            for i, a in enumerate(arrays)
        ]
        grads = gradients(kink.fn(*values).sum(), values)
    graph.outputs.update({f"g{i}": g for i, g in enumerate(grads)})
    optimized, _ = optimize(graph)
    eager = [Tensor(a, requires_grad=True) for a in arrays]
    kink.fn(*eager).sum().backward()
    for got, x, want in zip(
        run_graph(optimized, *arrays), eager, kink.expected(dtype), strict=True
    ):
        np.testing.assert_array_equal(got, x.grad.numpy())
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)


def test_only_what_needs_a_gradient_is_differentiated():
    graph = Graph(CPU)
    x = graph.add_input("x", Spec((4, 3), F32))  # no gradient: like a batch of inputs
    w = graph.add_input("w", Spec((3, 2), F32), requires_grad=True)
    loss = (x @ w).sum()
    before = len(graph.nodes)
    (gw,) = gradients(loss, [w])
    new = [node.op.name for node in graph.nodes[before:]]
    # one GEMM for dw; the gradient of x (another GEMM) is never built
    assert new.count("matmul") == 1
    assert gw.shape == (3, 2)


def test_a_parameter_off_the_path_gets_no_gradient():
    graph = Graph(CPU)
    w = graph.add_input("w", Spec((3,), F32), requires_grad=True)
    unused = graph.add_input("u", Spec((3,), F32), requires_grad=True)
    assert gradients((w * w).sum(), [w, unused])[1] is None


def test_loss_must_be_one_value_that_depends_on_parameters():
    graph = Graph(CPU)
    w = graph.add_input("w", Spec((3,), F32), requires_grad=True)
    x = graph.add_input("x", Spec((3,), F32))
    with pytest.raises(TracingError, match=r"single value, got shape \(3,\)"):
        gradients(w * 2.0, [w])
    with pytest.raises(TracingError, match="does not depend on any parameter"):
        gradients(x.sum(), [w])
