"""The engine's graph mode on its own (`autograd.jit`): duck-typed on model and optimizer, a
signature cache, retracing on new shapes over the same state arrays, `render_graph`."""

from types import SimpleNamespace

import numpy as np
import pytest

from trainctl import nn, optim
from trainctl.autograd import Tensor, ops
from trainctl.autograd.jit import TracedStep
from trainctl.autograd.step_graph import StepDefinition, StepError, StepOptions
from trainctl.autograd.storage import FlatMember, FlatState, StateArrays
from trainctl.autograd.tensor import topological_order
from trainctl.backend import CPU, manual_seed
from trainctl.graph_view import render_graph
from trainctl.train.step import make_step


class Affine:
    """A model that is no nn.Module: what the tracer and the step read of one, no more."""

    compute_dtype = None

    def __init__(self, weight: np.ndarray) -> None:
        self.weight = Tensor(weight, requires_grad=True)
        self._parameters, self._buffers = {"weight": self.weight}, {}
        self.training = True

    def named_modules(self):
        return [("", self)]

    def train(self):
        self.training = True

    def eval(self):
        self.training = False

    def __call__(self, x):
        return ops.matmul(x, self.weight)


class PlainSGD:
    """An optimizer that is no optim.Optimizer: parameters, a state dict and a pure rule."""

    state_names = ()

    def __init__(self, params, lr):
        self.params, self.lr, self.state, self.step_count = list(params), lr, {}, 0

    def step_scalars(self):
        return {"lr": self.lr}

    def update_rule(self, param, grad, state, *, lr):
        return param - lr * grad, {}


def _mse(out, targets):
    diff = out - targets
    return (diff * diff).mean()


def _affine_batch(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)).astype(np.float32), rng.standard_normal((n, 2))


def test_a_duck_typed_model_and_optimizer_train_as_eager_mode_does():
    weight = np.random.default_rng(1).standard_normal((4, 2)).astype(np.float32)
    model, optimizer = Affine(weight), PlainSGD([], 0.1)
    optimizer.params = [model.weight]
    step = TracedStep(
        StepDefinition(model, _mse, optimizer, CPU, np.dtype("float32"), StepOptions())
    )
    eager = Tensor(weight, requires_grad=True)
    for seed in range(3):
        x, y = _affine_batch(seed=seed)
        loss = step.train(x, y)
        expected = _mse(ops.matmul(Tensor(x), eager), Tensor(y.astype(np.float32)))
        expected.backward()
        eager = Tensor(eager.data - 0.1 * eager.grad.data, requires_grad=True)
        assert loss == expected.item()
        assert model.weight.data.tobytes() == eager.data.tobytes()
    assert optimizer.step_count == 3 and step.traces == 1
    outputs = step.evaluate(x)
    assert not model.training and outputs.tobytes() == (x @ eager.data).tobytes()


def _sgd_step():
    manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, make_step("graph", model, nn.cross_entropy, opt, device=CPU, dtype=np.float32)


def test_the_signature_is_shapes_and_dtypes_with_float_data_as_the_step_dtype():
    _, step = _sgd_step()
    traced = step.traced
    x64, x32 = np.zeros((5, 4)), np.zeros((5, 4), np.float32)
    labels = np.zeros(5, np.int64)
    assert traced.signature("train", x64, labels) == traced.signature("train", x32, labels)
    assert traced.signature("train", x32, labels) == (
        "train", (5, 4), np.dtype("float32"), (5,), np.dtype("int64"),
    )  # fmt: skip
    assert traced.signature("eval", x32) != traced.signature("eval", np.zeros((4, 4)))


def test_a_new_batch_shape_retraces_over_the_same_state_arrays():
    model, step = _sgd_step()
    rng = np.random.default_rng(0)
    for n in (5, 5, 3, 5, 3):
        step.train(rng.standard_normal((n, 4)), rng.integers(0, 3, n))
    compiled = step.traced.compiled
    assert step.traces == 2 and [c.signature[1] for c in compiled] == [(5, 4), (3, 4)]
    owned = [dict(c.state.params)[model[0].weight] for c in compiled]
    assert owned[0] is owned[1] is model[0].weight.data  # both programs update one array
    stats = step.stats()
    assert stats["traces"] == 2 and stats["trace_seconds"] > 0 and stats["compile_seconds"] > 0


def test_flat_state_members_become_views_and_bring_their_values():
    storage = StateArrays(CPU)

    def slot(name, shape, source=None):
        return SimpleNamespace(name=name, value=ops.Spec(shape, np.dtype("float32")), source=source)

    assert not storage.allocate([slot("param:b", (3,))])
    storage.arrays["param:b"][:] = [1, 2, 3]
    members = (FlatMember("param:w", None, (2, 2), 0), FlatMember("param:b", None, (3,), 4))
    layout = FlatState(members)
    assert layout.describe() == "param:w[2, 2]@0, param:b[3]@4"
    assert storage.allocate([slot("flat:w..b", (7,), layout)])  # b had an array: it moved
    flat = storage.arrays["flat:w..b"]
    np.testing.assert_array_equal(flat[4:], [1, 2, 3])
    storage.arrays["param:w"][...] = 9
    assert storage.arrays["param:b"].base is flat and flat[:4].tolist() == [9, 9, 9, 9]
    assert not storage.allocate([slot("flat:w..b", (7,), layout)])  # already there


class ShapeBranch(nn.Module):
    """Uses `shift` only for batches of more than 3: the traces of the two batch sizes update
    different sets of parameters, so each would lay out its own flat arrays."""

    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Linear(4, 6), nn.Linear(6, 3)
        self.shift = nn.Parameter(np.full(6, 0.1, np.float32))

    def forward(self, x):
        h = self.first(x)
        if x.shape[0] > 3:
            h = h + self.shift
        return self.second(h.relu())


@pytest.mark.parametrize("sizes", [(5, 2, 5, 2, 5), (2, 5, 2, 5, 2)])
def test_traces_that_update_different_parameters_share_one_layout(sizes):
    def run(mode):
        manual_seed(0)
        model = ShapeBranch()
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        step = make_step(mode, model, nn.cross_entropy, opt, device=CPU, dtype=np.float32)
        rng = np.random.default_rng(0)
        losses = [step.train(rng.standard_normal((n, 4)), rng.integers(0, 3, n)) for n in sizes]
        return losses, model.state_dict(), opt.state_dict(), step

    eager, graph = run("eager"), run("graph")
    assert eager[0] == graph[0]
    for name, value in eager[1].items():
        assert graph[1][name].tobytes() == value.tobytes(), name
    for index, entry in eager[2]["state"].items():
        assert (
            graph[2]["state"][index]["momentum_buffer"].tobytes()
            == entry["momentum_buffer"].tobytes()
        )
    first, second = (c for c in graph[3].traced.compiled)
    assert any(slot.name.startswith("flat:") for slot in first.graph.state)
    assert not any(slot.name.startswith("flat:") for slot in second.graph.state)


def test_render_graph_takes_the_step_options():
    manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    opt = optim.SGD(model.parameters(), lr=0.1)
    args = (model, nn.cross_entropy, opt, (2, 4), (2,), np.int64)
    plain = render_graph(*args, device=CPU, dtype=np.float32, stage="traced")
    clipped = render_graph(
        *args, device=CPU, dtype=np.float32, stage="traced", options=StepOptions(grad_clip=1.0)
    )
    assert "sqrt(" not in plain and "sqrt(" in clipped
    unfused = render_graph(
        *args, device=CPU, dtype=np.float32, options=StepOptions(disabled_passes=["fuse"])
    )
    assert "# pass fuse:" not in unfused and "# pass cse:" in unfused


def test_step_options_are_checked_once_where_they_are_made():
    with pytest.raises(StepError, match="grad_clip must be a number > 0 or null, got -1"):
        StepOptions(grad_clip=-1)
    assert StepOptions(grad_clip=2).grad_clip == 2.0
    assert StepOptions(disabled_passes=["cse"]).disabled_passes == ("cse",)


def test_one_topological_order_places_each_node_after_its_parents():
    parents = {"loss": ["b", "c"], "b": ["a"], "c": ["a"], "a": []}
    order = topological_order("loss", parents.__getitem__)
    assert order == ["a", "c", "b", "loss"]
