"""Tracing: what a trace records, what it leaves untouched, and the errors for code that
needs data while it is traced."""

import numpy as np
import pytest

from trainctl import nn
from trainctl.autograd import Tensor, ops
from trainctl.autograd.graph import (
    Graph,
    HostScalar,
    RngKey,
    TracingError,
    Value,
    tracing,
)
from trainctl.autograd.ops import Spec
from trainctl.backend import CPU, Generator, default_generator, manual_seed
from trainctl.graph_view import format_graph, graph_to_dot

F32 = np.dtype(np.float32)


def _model():
    manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 2))


def test_a_trace_records_nodes_with_shapes_and_runs_nothing():
    model = _model()
    with tracing(CPU, model) as tracer:
        x = tracer.graph.add_input("inputs", Spec((5, 3), F32))
        out = model(x)
    graph = tracer.graph
    assert isinstance(out, Value) and out.shape == (5, 2) and out.dtype == F32
    names = [node.op.name for node in graph.nodes]
    assert names[:2] == ["matmul", "add"] and "dropout" in names
    assert [s.name for s in graph.state] == [
        "param:0.weight",
        "param:0.bias",
        "param:1.weight",
        "param:1.bias",
        "buffer:1.running_mean",
        "buffer:1.running_var",
        "param:3.weight",
        "param:3.bias",
    ]  # the order of state_dict()
    # BatchNorm rebinds its running statistics: they become outputs of the graph.
    assert set(graph.outputs) == {"buffer:1.running_mean", "buffer:1.running_var"}


def test_tracing_leaves_the_model_and_generator_as_they_were():
    model = _model()
    weight, mean = model[0].weight, model[1].running_mean
    counter = default_generator.counter
    with tracing(CPU, model) as tracer:
        model(tracer.graph.add_input("inputs", Spec((5, 3), F32)))
        assert isinstance(model[0].__dict__["weight"], Value)
    assert model[0].weight is weight and model[1].running_mean is mean
    assert model[1]._buffers["running_mean"] is mean
    assert [name for name, _ in model.named_parameters()][0] == "0.weight"
    assert default_generator.counter == counter
    assert tracer.graph.generators == [(default_generator, 1)]


def test_tracing_restores_the_model_after_an_error():
    model = _model()
    weight = model[0].weight
    with pytest.raises(TracingError), tracing(CPU, model) as tracer:
        x = tracer.graph.add_input("inputs", Spec((5, 3), F32))
        model(x).item()
    assert model[0].weight is weight and model[1].running_mean.shape == (4,)


def test_dropout_keys_are_symbolic_and_count_from_each_generator():
    own = Generator(seed=7)
    own.counter = 40
    model = nn.Sequential(nn.Dropout(0.5), nn.Dropout(0.5, generator=own), nn.Dropout(0.5))
    with tracing(CPU, model) as tracer:
        model(tracer.graph.add_input("inputs", Spec((2, 3), F32)))
    keys = [node.attrs["key"] for node in tracer.graph.nodes]
    assert keys == [RngKey(0, 0), RngKey(1, 0), RngKey(0, 1)]
    assert tracer.graph.generators == [(default_generator, 2), (own, 1)]
    assert own.counter == 40


def test_captured_tensors_and_arrays_become_explicit_constants():
    graph = Graph(CPU)
    x = graph.add_input("x", Spec((2,), F32))
    with tracing(CPU) as tracer:
        y = x * Tensor(np.array([2.0, 3.0], np.float32)) + np.float32(1.0)
    constants = [c for c in tracer.graph.constants + graph.constants if c.array is not None]
    assert any(np.array_equal(c.array, [2.0, 3.0]) for c in constants)
    assert y.shape == (2,)
    assert "const" in format_graph(graph)


def test_a_tensor_operand_on_the_left_still_records():
    graph = Graph(CPU)
    x = graph.add_input("x", Spec((2, 3), F32))
    with tracing(CPU):
        y = Tensor(np.ones((4, 2), np.float32)) @ x
    assert isinstance(y, Value) and y.shape == (4, 3)
    assert graph.nodes[-1].op is ops.Matmul


def test_host_scalars_are_weak_and_their_arithmetic_is_recorded():
    graph = Graph(CPU)
    x = graph.add_input("x", Spec((3,), F32))
    lr = graph.add_scalar("lr", 0.1)
    scale = graph.add_scalar("scale", 0.5)
    y = x * (lr / scale**0.5)
    assert y.dtype == F32  # a host number never promotes float32, as a Python float would not
    host = [node for node in graph.nodes if isinstance(node.out, HostScalar)]
    assert [node.op.name for node in host] == ["pow", "div"]
    assert "%lr" in format_graph(graph) and "host" in format_graph(graph)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (lambda v: v.item(), r"\.item\(\) on the traced value"),
        (lambda v: v.numpy(), r"\.numpy\(\) on the traced value"),
        (lambda v: v.data, r"\.data on the traced value"),
        (lambda v: float(v), r"float\(\) on the traced value"),
        (lambda v: bool(v.sum() > 0), r"Python `if`/`while`/bool\(\)"),
        (lambda v: np.asarray(v), r"conversion to a NumPy array"),
        (lambda v: [1, 2][v], r"use as an index"),
    ],
)
def test_data_dependent_code_is_a_tracing_error(code, message):
    graph = Graph(CPU)
    v = graph.add_input("x", Spec((2,), F32))
    with pytest.raises(TracingError, match=message) as info:
        code(v)
    assert "use mode: eager" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_python_if_on_a_traced_loss_names_the_value():
    graph = Graph(CPU)
    loss = graph.add_input("x", Spec((), F32)) * 2.0
    message = rf"bool\(\) .* on the traced value %{loss.id + 1} = greater\(%{loss.id}, 1.0\)"
    with pytest.raises(TracingError, match=message):
        if loss > 1.0:
            pass


@pytest.mark.parametrize(
    "code",
    [lambda s: float(s), lambda s: s > 0.1, lambda s: bool(s), lambda s: int(s)],
)
def test_reading_a_per_step_number_is_a_tracing_error(code):
    lr = Graph(CPU).add_scalar("lr", 0.1)
    with pytest.raises(TracingError, match="the per-step value %lr has no value while tracing"):
        code(lr)


def test_values_of_two_traces_do_not_mix():
    a = Graph(CPU).add_input("x", Spec((2,), F32))
    b = Graph(CPU).add_input("x", Spec((2,), F32))
    with pytest.raises(TracingError, match="belongs to another trace"):
        a + b


def test_shape_errors_surface_while_tracing():
    from trainctl.errors import ShapeError

    graph = Graph(CPU)
    x = graph.add_input("x", Spec((2, 3), F32))
    with pytest.raises(ShapeError, match="inner sizes differ"):
        x @ x


def test_detach_stops_gradients():
    graph = Graph(CPU)
    x = graph.add_input("x", Spec((2,), F32), requires_grad=True)
    assert (x * 2.0).requires_grad
    assert not (x.detach() * 2.0).requires_grad


def test_text_and_dot_show_every_node():
    model = _model()
    with tracing(CPU, model) as tracer:
        tracer.graph.outputs["output"] = model(tracer.graph.add_input("inputs", Spec((5, 3), F32)))
    graph = tracer.graph
    text, dot = format_graph(graph), graph_to_dot(graph)
    for node in graph.nodes:
        assert f"{node.out.label} = {node.op.name}(" in text
        assert f'v{node.out.id} [label="{node.op.name}' in dot
    assert "input %inputs: float32[5, 3]" in text
    assert "state %param:0.weight: float32[3, 4]" in text
    assert "input rng0: generator counter (+1 per step)" in text
    assert dot.startswith("digraph step {") and dot.endswith("}")
