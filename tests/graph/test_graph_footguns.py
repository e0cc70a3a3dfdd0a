"""Graph mode's intended surprises, pinned down: what retraces, what refuses to trace, what is
frozen at trace time. Each test is a short story; together they document the mode."""

import numpy as np
import pytest

from trainctl import nn, optim
from trainctl.autograd import Tensor, ops
from trainctl.autograd.graph import TracingError
from trainctl.backend import CPU, manual_seed
from trainctl.nn import Module
from trainctl.train.step import make_step


def _step(model, mode="graph", optimizer=None, loss_fn=nn.cross_entropy):
    opt = optimizer(model.parameters()) if optimizer else optim.SGD(model.parameters(), lr=0.1)
    return make_step(mode, model, loss_fn, opt, device=CPU, dtype=np.float32), opt


X = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
Y = np.array([0, 1, 1, 0])


class ItemInForward(Module):
    """Reads a number out of a tensor and computes with it as a Python float."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 2)

    def forward(self, x):
        out = self.layer(x)
        return out * (1.0 / out.abs().max().item())


class NumpyInForward(Module):
    """Computes with a NumPy copy of a traced value: no guard can stand for that."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 2)

    def forward(self, x):
        out = self.layer(x)
        return out * Tensor(np.float32(1.0) / np.abs(out.numpy()).max())


def test_computing_on_a_numpy_copy_refuses_to_trace_but_runs_eagerly():
    manual_seed(0)
    eager, _ = _step(NumpyInForward(), mode="eager")
    assert np.isfinite(eager.train(X, Y))
    graph, _ = _step(NumpyInForward())
    with pytest.raises(TracingError, match=r"\.numpy\(\) on the traced value %\d+ = ") as info:
        graph.train(X, Y)
    assert str(info.value).endswith("use mode: eager for this model")


def test_a_number_read_with_item_is_frozen_into_the_trace_and_guarded():
    """`.item()` specialises the graph on the number read (a guard checks it before each
    replay): a number that changes every step traces again every step, and past
    graph.max_traces the steps run eagerly; the results stay eager's bit for bit."""
    batches = [(X * (1.0 + i), Y) for i in range(5)]
    results = []
    for mode in ("eager", "graph"):
        manual_seed(0)
        model = ItemInForward()
        step = make_step(mode, model, nn.cross_entropy, optim.SGD(model.parameters(), lr=0.1),
                         device=CPU, dtype=np.float32, max_traces=3)  # fmt: skip
        results.append(([step.train(*batch) for batch in batches], model.layer.weight.data))
    (eager_losses, eager_weight), (graph_losses, graph_weight) = results
    assert graph_losses == eager_losses
    assert np.array_equal(graph_weight, eager_weight)
    stats = step.stats()
    assert (stats["traces"], stats["eager_fallbacks"]) == (3, 2)
    assert "item(" in stats["signatures"][0]["guards"][0]


def test_host_randomness_in_forward_is_frozen_at_trace_time():
    """np.random in a forward runs once, while tracing: graph mode replays that one draw.
    Use nn.Dropout (or ops.dropout with a generator key) for noise that changes every step."""

    class NoisyInput(Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(3, 2)

        def forward(self, x):
            noise = Tensor(np.random.default_rng().standard_normal(x.shape).astype(np.float32))
            return self.layer(x + noise)

    manual_seed(0)
    graph, _ = _step(NoisyInput())
    graph.train(X, Y)
    first = graph.evaluate(X)
    assert np.array_equal(graph.evaluate(X), first)  # the eval trace froze its own draw
    (noise_constant,) = [
        c for c in next(iter(graph.traced.compiled)).graph.constants if c.shape == (4, 3)
    ]
    assert noise_constant.array is not None


def test_python_state_a_forward_keeps_changes_once_per_trace():
    """A Python model (config model.python) that counts its calls, or anneals a plain float
    in forward, sees every step in eager mode but only each trace in graph mode: the
    compiled step replays what the trace recorded. Keep changing state in buffers (rebound
    tensors), which graph mode captures, or compute it from the step's inputs."""

    class Counting(Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(3, 2)
            self.calls = 0
            self.scale = 1.0

        def forward(self, x):
            self.calls += 1
            self.scale *= 0.5  # a plain float: a constant in the traced graph
            return self.layer(x) * self.scale

    manual_seed(0)
    eager_model, graph_model = Counting(), Counting()
    graph_model.load_state_dict(eager_model.state_dict())
    eager, _ = _step(eager_model, mode="eager")
    graph, _ = _step(graph_model)
    eager_losses = [eager.train(X, Y) for _ in range(3)]
    graph_losses = [graph.train(X, Y) for _ in range(3)]
    assert (eager_model.calls, graph_model.calls) == (3, 1)
    assert graph_losses[0] == eager_losses[0] and graph_losses[1:] != eager_losses[1:]


def test_hyperparameters_are_frozen_at_trace_time_but_the_learning_rate_is_not():
    """momentum, betas, weight decay... are read once, while tracing; lr (and whatever else
    step_scalars() returns) is fed in every step, so schedules work."""
    manual_seed(0)
    model = nn.Linear(3, 2)
    graph, opt = _step(model, optimizer=lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9))
    graph.train(X, Y)
    opt.momentum = 0.0  # too late: the compiled step keeps 0.9
    opt.schedule.base_lr = 0.0  # taken into account: nothing moves any more
    before = model.weight.numpy().copy()
    graph.train(X, Y)
    np.testing.assert_array_equal(model.weight.numpy(), before)
    assert graph.traces == 1


def test_the_model_structure_is_frozen_too():
    """Layers added after the first trace are not in the compiled step until a new
    signature retraces: rebuild the step after changing the model."""
    manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2))
    graph, _ = _step(model)
    graph.train(X, Y)
    model.append(nn.ReLU())
    assert graph.evaluate(X).min() == 0  # the eval trace is new and sees the ReLU...
    graph.train(X, Y)
    assert graph.traces == 2  # ...but the training step is the one traced before
    train = next(c for c in graph.traced.compiled if c.signature[0] == "train")
    assert "relu" not in graph_ops(train.graph)


def graph_ops(graph):
    names = set()
    for node in graph.nodes:
        names.add(node.op.name)
        names.update(member.op.name for member in node.attrs.get("body", ()))
    return names


def test_each_new_batch_shape_and_each_mode_is_a_trace():
    manual_seed(0)
    graph, _ = _step(nn.Linear(3, 2))
    for size in (4, 4, 3, 4, 3, 2):
        graph.train(X[:size], Y[:size])
    graph.evaluate(X)
    graph.evaluate(X[:2])
    assert graph.traces == 3 + 2


def test_parameters_are_updated_in_place_not_rebound():
    """Eager optimizers rebind param.data to a new array each step; graph mode writes into the
    same array. A reference kept to param.data sees the new values in graph mode only."""
    for mode, same_object in (("eager", False), ("graph", True)):
        manual_seed(0)
        model = nn.Linear(3, 2)
        step, _ = _step(model, mode=mode)
        step.train(X, Y)
        kept = model.weight.data
        copy = kept.copy()
        step.train(X, Y)
        assert (model.weight.data is kept) == same_object
        assert (not np.array_equal(kept, copy)) == same_object


def test_graph_mode_does_not_fill_grad():
    """The gradients live in the step's buffers; .grad stays as it was (eager fills it)."""
    manual_seed(0)
    model = nn.Linear(3, 2)
    graph, _ = _step(model)
    graph.train(X, Y)
    assert model.weight.grad is None
    eager, _ = _step(model, mode="eager")
    eager.train(X, Y)
    assert model.weight.grad is not None


def test_reading_the_learning_rate_in_an_update_rule_refuses_to_trace():
    """Per-step numbers are symbolic in a trace: arithmetic works, comparisons do not."""

    class Careful(optim.SGD):
        def update_rule(self, param, grad, state, *, lr, grad_factor):
            if lr > 0.05:  # a decision on a number that changes every step
                return param - 0.05 * grad, {}
            return param - lr * grad, {}

    manual_seed(0)
    graph, _ = _step(nn.Linear(3, 2), optimizer=lambda ps: Careful(ps, lr=0.1))
    with pytest.raises(TracingError, match="the per-step value %lr has no value while tracing"):
        graph.train(X, Y)


def test_elementwise_results_on_transposed_views_are_c_ordered():
    """NumPy gives exp(x.T) the memory order of x.T; graph mode writes every result into a
    C-ordered buffer. A sum over such a value adds in another order: the same number up to its
    last bit (within the 1e-6 agreement), not bit for bit as everywhere else."""

    class Transposing(Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(3, 4)

        def forward(self, x):
            h = ops.exp(self.layer(x).T * 0.1)
            return (h.sum(axis=1, keepdims=True) * h).T

    losses = {}
    for mode in ("eager", "graph"):
        manual_seed(0)
        step, _ = _step(Transposing(), mode=mode)
        losses[mode] = [step.train(X, np.array([0, 1, 2, 3])) for _ in range(3)]
    np.testing.assert_allclose(losses["graph"], losses["eager"], rtol=1e-6)
