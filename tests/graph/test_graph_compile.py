"""Compilation and the memory planner: buffers are reused, state is updated in place, views
cost nothing, and a planned program computes exactly what the unplanned one does."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainctl import nn, optim
from trainctl.autograd import ops, tensor
from trainctl.autograd.compile import compile_graph
from trainctl.autograd.graph import Graph
from trainctl.autograd.ops import Spec
from trainctl.autograd.passes import fuse_elementwise
from trainctl.backend import CPU, manual_seed
from trainctl.errors import DataError
from trainctl.train.step import make_step

F32 = np.dtype(np.float32)


def _program(graph, state, plan_memory=True):
    return compile_graph(graph, state, plan_memory)


def test_a_long_chain_lives_in_two_buffers():
    graph = Graph(CPU)
    x = graph.add_input("x", Spec((8, 8), F32))
    y = x
    for _ in range(20):
        y = ops.tanh(y @ x)  # matmul cannot write over its input: two buffers alternate
    graph.outputs["out"] = y
    program = _program(graph, {})
    assert program.buffers == 2
    assert program.buffer_bytes == 2 * 8 * 8 * 4


def test_state_is_updated_in_place_without_a_final_copy():
    graph = Graph(CPU)
    g = graph.add_input("g", Spec((5,), F32))
    state = graph.add_state("param:w", Spec((5,), F32), None)
    graph.outputs["param:w"] = state - 0.5 * g
    w = np.arange(5, dtype=np.float32)
    program = _program(graph, {"param:w": w})
    assert "copyto" not in program.source
    assert "out=state0" in program.source
    program.inputs[0][...] = np.ones(5)
    program.function()
    np.testing.assert_array_equal(w, np.arange(5) - 0.5)


def test_state_read_after_its_update_is_copied_at_the_end():
    graph = Graph(CPU)
    g = graph.add_input("g", Spec((5,), F32))
    state = graph.add_state("param:w", Spec((5,), F32), None)
    new = state - g
    graph.outputs.update({"param:w": new, "loss": (state * new).sum()})
    w = np.arange(5, dtype=np.float32)
    program = _program(graph, {"param:w": w})
    program.inputs[0][...] = np.ones(5)
    (loss,) = program.function()
    before = np.arange(5, dtype=np.float32)
    assert float(loss) == float((before * (before - 1)).sum())
    np.testing.assert_array_equal(w, before - 1)
    assert program.source.rstrip().splitlines()[-2].lstrip().startswith("xp.copyto(state0")


def test_views_get_no_buffer_and_are_built_once():
    graph = Graph(CPU)
    x = graph.add_input("x", Spec((4, 6), F32))
    graph.outputs["out"] = ops.exp(ops.exp(x).reshape(6, 4).transpose(1, 0)[1:3]).sum()
    program = _program(graph, {})
    body = program.source.split("def step")[1]
    assert "reshape" not in body and "transpose" not in body
    assert program.buffers == 3  # the two exps' outputs and the sum
    data = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    program.inputs[0][...] = data
    (out,) = program.function()
    # NumPy gives exp of a transposed view the view's memory order, graph mode a C-ordered
    # buffer: the sum adds in another order, so only the last bit may differ.
    want = np.exp(np.exp(data).reshape(6, 4).T[1:3]).sum()
    np.testing.assert_allclose(out, want, rtol=1e-6)


def test_a_batch_passed_in_is_read_in_place_through_fresh_views():
    graph = Graph(CPU)
    x = graph.add_input("x", Spec((4, 6), F32))
    graph.outputs["out"] = ops.exp(x.reshape(6, 4).transpose(1, 0)[1:3]).sum()
    program = _program(graph, {})
    first = program.source.split("def step")[1].splitlines()[1].strip()
    assert first == "view1 = Reshape.forward(xp, input0, shape=(6, 4))", program.source
    rng = np.random.default_rng(0)
    copied, passed = (rng.standard_normal((4, 6)).astype(np.float32) for _ in range(2))
    program.inputs[0][...] = copied
    (from_buffer,) = np.array(program.function(), copy=True)
    (from_array,) = program.function(input0=passed)
    np.testing.assert_allclose(from_array, np.exp(passed.reshape(6, 4).T[1:3]).sum(), rtol=1e-6)
    np.testing.assert_array_equal(program.inputs[0], copied)  # the step's own array untouched
    assert program.function()[0] == from_buffer  # and used again when nothing is passed


def test_the_mlp_step_body_is_only_calls_with_out():
    manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = make_step("graph", model, nn.cross_entropy, opt, device=CPU, dtype=np.float32)
    step.train(np.ones((4, 6)), np.array([0, 1, 2, 0]))
    (compiled,) = step.traced.compiled
    body = compiled.program.source.split("def step")[1].splitlines()[1:-1]
    calls = [line.strip() for line in body if "labels_outside" not in line]
    calls = [line for line in calls if not line.startswith("if ")]  # the label range check
    views = [line for line in calls if re.match(r"view\d+ = ", line)]  # of the batch, each step
    assert calls[: len(views)] == views and all("input" in line for line in views[:1])
    calls = calls[len(views) :]
    writes = ("out=", "copyto(", "] = ")
    loops = [line for line in calls if line.startswith("loop")]  # a loop writes its first argument
    assert loops and all(any(w in line for w in writes) for line in calls if line not in loops)
    assert not any("empty(" in line or "zeros(" in line for line in body)


def test_labels_out_of_range_are_a_data_error():
    manual_seed(0)
    model = nn.Linear(6, 3)
    opt = optim.SGD(model.parameters(), lr=0.1)
    step = make_step("graph", model, nn.cross_entropy, opt, device=CPU, dtype=np.float32)
    with pytest.raises(DataError, match=r"labels must be in \[0, 3\) .* found labels in \[0, 3\]"):
        step.train(np.ones((4, 6)), np.array([0, 1, 3, 0]))


# ---------------------------------------------------------------- random graphs

SHAPES = [(4, 3), (3,), (4, 1)]


def _apply(kind, a, b):
    if kind == "add":
        return a + b
    if kind == "sub":
        return a - b
    if kind == "mul":
        return a * b
    if kind == "div":
        return a / (ops.absolute(b) + 1.0)
    if kind == "maximum":
        return ops.maximum(a, b)
    if kind == "where":
        return ops.where(a > b, a, b * 0.5)
    if kind == "exp":
        return ops.exp(ops.tanh(a))
    if kind == "relu":
        return ops.relu(a) * 2.0
    if kind == "sigmoid":
        return ops.sigmoid(a)
    if kind == "sum":
        return a.sum(axis=0, keepdims=True) if a.ndim == 2 else a.sum(keepdims=True)
    if kind == "max":
        return a.max(axis=-1, keepdims=True)
    if kind == "matmul":
        left = a if a.ndim == 2 else a.reshape(1, -1)
        return left @ ops.broadcast_to(b.reshape(1, -1) if b.ndim == 1 else b, (left.shape[1], 3))
    if kind == "transpose":  # into a GEMM: eager's elementwise ops on strided views keep
        return a.T @ a if a.ndim == 2 else a * 1.5  # their memory order (see the footguns)
    if kind == "slice":
        return a[..., :1] if a.shape[-1] > 1 else a
    raise AssertionError(kind)


KINDS = [
    "add", "sub", "mul", "div", "maximum", "where", "exp", "relu", "sigmoid", "sum", "max",
    "matmul", "transpose", "slice",
]  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(KINDS), st.integers(0, 50), st.integers(0, 50)),
        min_size=1,
        max_size=14,
    ),
    fuse=st.booleans(),
    outputs=st.lists(st.integers(0, 50), min_size=1, max_size=3),
)
def test_planned_programs_compute_what_unplanned_ones_do(steps, fuse, outputs):
    """Random graphs of elementwise ops, broadcasts, reductions, GEMMs and views, with a state
    slot updated in place: the planner's buffer sharing never changes a number."""
    graph = Graph(CPU)
    values = [graph.add_input(f"x{i}", Spec(shape, F32)) for i, shape in enumerate(SHAPES)]
    state = graph.add_state("param:w", Spec((4, 3), F32), None)
    values.append(state)
    for kind, i, j in steps:
        a, b = values[i % len(values)], values[j % len(values)]
        try:
            values.append(_apply(kind, a, b))
        except Exception:  # shapes that do not fit: skip the step
            continue
    new_state = state * 0.5 + ops.broadcast_to(values[-1].sum(), (4, 3))
    graph.outputs["param:w"] = new_state
    for k, index in enumerate(outputs):
        graph.outputs[f"out{k}"] = values[index % len(values)]
    if fuse:
        graph = fuse_elementwise(graph)
    rng = np.random.default_rng(len(steps))
    arrays = [rng.standard_normal(shape).astype(np.float32) for shape in SHAPES]
    start = rng.standard_normal((4, 3)).astype(np.float32)
    results = []
    for plan_memory in (False, True):
        w = start.copy()
        program = _program(graph, {"param:w": w}, plan_memory)
        for target, array in zip(program.inputs, arrays, strict=True):
            target[...] = array
        with np.errstate(all="ignore"):
            outs = [np.array(v, copy=True) for v in program.function()]
            outs += [np.array(v, copy=True) for v in program.function()]  # a replay, too
        results.append((outs, w.copy()))
    (naive, w_naive), (planned, w_planned) = results
    for a, b in zip(naive, planned, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(w_naive, w_planned)


@pytest.mark.parametrize(
    ("activation", "call", "overwrites", "scratch"),
    [
        (ops.softplus, "Softplus.forward", True, 1),
        (ops.sigmoid, "Sigmoid.forward", False, 3),
        (ops.tanh, "xp.tanh", True, 0),
    ],
    ids=["softplus", "sigmoid", "tanh"],
)
def test_the_plan_follows_what_each_op_declares(activation, call, overwrites, scratch):
    """The planner knows an op only by its attributes: its output takes over a dying input
    only where `overwrites` allows, and it gets exactly the scratch `scratch` asks for."""
    graph = Graph(CPU)
    x = graph.add_input("x", Spec((8, 8), F32))
    graph.outputs["out"] = activation(x @ x)
    program = _program(graph, {})
    lines = [line.strip() for line in program.source.split("def step")[1].splitlines()]
    (product,) = [line.rsplit("out=", 1)[1] for line in lines if line.startswith("xp.matmul")]
    (line,) = [line for line in lines if line.startswith(call)]
    assert line.endswith(f"out={product}") == overwrites, program.source
    given = re.findall(r"scratch=\(([^)]*)\)", line)
    assert len([s for s in given[0].split(",") if s.strip()] if given else []) == scratch
    data = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    program.inputs[0][...] = data
    (out,) = program.function()
    eager = activation(tensor(data) @ tensor(data)).numpy()
    np.testing.assert_array_equal(out, eager)
