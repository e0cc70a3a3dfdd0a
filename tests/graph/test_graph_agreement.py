"""Graph mode against eager mode: the same seed and data give the same losses, parameters,
optimizer state, BatchNorm statistics, generator counter and eval outputs, for every layer
type, every loss, every optimizer and schedule, dropout, clipping and every pass setting."""

import numpy as np
import pytest
from graph_helpers import assert_agree, batches_of, run_mode

from trainctl import nn, optim
from trainctl.autograd.passes import PASSES
from trainctl.backend import CPU, manual_seed
from trainctl.train.step import make_step


def _sgd(params):
    return optim.SGD(params, lr=0.1, momentum=0.9)


LAYER_CASES = {
    "linear_relu": (lambda: nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 4)), (6, 5)),
    "linear_no_bias": (lambda: nn.Sequential(nn.Linear(5, 4, bias=False)), (6, 5)),
    "conv_pool": (
        lambda: nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(3 * 3 * 3, 4),
        ),
        (4, 6, 6, 2),
    ),
    "conv_stride_no_pad": (
        lambda: nn.Sequential(nn.Conv2d(2, 3, 3, stride=2), nn.Flatten(), nn.Linear(12, 4)),
        (4, 6, 6, 2),
    ),
    "overlapping_max_pool": (
        lambda: nn.Sequential(nn.MaxPool2d(3, stride=1), nn.Flatten(), nn.Linear(32, 4)),
        (4, 6, 6, 2),
    ),
    "avg_pool": (
        lambda: nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(18, 4)),
        (4, 6, 6, 2),
    ),
    "global_avg_pool": (
        lambda: nn.Sequential(nn.Conv2d(2, 4, 1), nn.GlobalAvgPool2d(), nn.Linear(4, 4)),
        (4, 6, 6, 2),
    ),
    "batch_norm_1d": (
        lambda: nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 4)),
        (8, 5),
    ),
    "batch_norm_2d": (
        lambda: nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1, bias=False),
            nn.BatchNorm2d(3),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(48, 4),
        ),
        (4, 4, 4, 2),
    ),
    "layer_norm": (lambda: nn.Sequential(nn.LayerNorm(5), nn.Linear(5, 4)), (6, 5)),
    "dropout": (
        lambda: nn.Sequential(nn.Linear(5, 16), nn.Dropout(0.5), nn.ReLU(), nn.Linear(16, 4)),
        (6, 5),
    ),
    "activations": (
        lambda: nn.Sequential(
            nn.Linear(5, 6),
            nn.Tanh(),
            nn.Linear(6, 6),
            nn.Sigmoid(),
            nn.Linear(6, 6),
            nn.GELU(),
            nn.Linear(6, 6),
            nn.LeakyReLU(0.1),
            nn.Linear(6, 6),
            nn.SiLU(),
            nn.Linear(6, 6),
            nn.Softplus(),
            nn.Linear(6, 6),
            nn.ELU(0.5),
            nn.Linear(6, 4),
        ),
        (6, 5),
    ),
    "softmax_layer": (lambda: nn.Sequential(nn.Linear(5, 4), nn.Softmax()), (6, 5)),
    "residual": (
        lambda: nn.Sequential(
            nn.Linear(5, 6), nn.Residual(nn.Sequential(nn.Linear(6, 6), nn.ReLU())), nn.Linear(6, 4)
        ),
        (6, 5),
    ),
    "shared_weights": (None, (6, 5)),
}


def _shared():
    layer = nn.Linear(5, 5)
    return nn.Sequential(layer, nn.Tanh(), layer, nn.Linear(5, 4))


@pytest.mark.parametrize("name", sorted(LAYER_CASES))
def test_every_layer_type_agrees(name):
    build, shape = LAYER_CASES[name]
    build = build or _shared
    batches = batches_of(shape, "labels")
    eager = run_mode("eager", build, _sgd, nn.cross_entropy, batches)
    graph = run_mode("graph", build, _sgd, nn.cross_entropy, batches)
    assert_agree(eager, graph)


def test_embedding_with_integer_inputs_agrees():
    def build():
        return nn.Sequential(nn.Embedding(9, 3), nn.Flatten(), nn.Linear(6, 4))

    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 9, (5, 2)), rng.integers(0, 4, 5)) for _ in range(3)]
    eager = run_mode("eager", build, _sgd, nn.cross_entropy, batches)
    graph = run_mode("graph", build, _sgd, nn.cross_entropy, batches)
    assert_agree(eager, graph)


LOSSES = {
    "cross_entropy": (nn.cross_entropy, "labels"),
    "label_smoothing": (lambda out, y: nn.cross_entropy(out, y, label_smoothing=0.1), "labels"),
    "cross_entropy_sum": (lambda out, y: nn.cross_entropy(out, y, reduction="sum"), "labels"),
    "mse": (nn.mse_loss, "values"),
    "bce_with_logits": (nn.binary_cross_entropy_with_logits, "binary"),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_agrees(name):
    loss_fn, targets = LOSSES[name]

    def build():
        return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 4))

    batches = batches_of((6, 5), targets)
    eager = run_mode("eager", build, _sgd, loss_fn, batches)
    graph = run_mode("graph", build, _sgd, loss_fn, batches)
    assert_agree(eager, graph)


def test_bce_at_zero_logits_gives_the_right_update_in_both_modes():
    """A zero-initialised layer puts every logit exactly at the kink of the stable form;
    the gradient there is sigmoid(0) - target, and both modes must apply it."""

    def build():
        layer = nn.Linear(5, 4)
        layer.weight.data[...] = 0
        layer.bias.data[...] = 0
        return layer

    batches = batches_of((6, 5), "binary", n=1)
    x, y = batches[0]
    runs = {
        mode: run_mode(
            mode,
            build,
            lambda ps: optim.SGD(ps, lr=1.0),
            nn.binary_cross_entropy_with_logits,
            batches,
        )
        for mode in ("eager", "graph")
    }
    assert_agree(runs["eager"], runs["graph"])
    dlogits = (0.5 - y) / y.size
    for run in runs.values():
        np.testing.assert_allclose(run.params["bias"], -dlogits.sum(axis=0), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(run.params["weight"], -(x.T @ dlogits), rtol=1e-5, atol=1e-6)


OPTIMIZERS = {
    "sgd": lambda ps: optim.SGD(ps, lr=0.1),
    "sgd_momentum_decay": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-2),
    "sgd_nesterov": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.8, nesterov=True),
    "sgd_dampening": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.5),
    "adam": lambda ps: optim.Adam(ps, lr=0.01, weight_decay=1e-3),
    "adamw": lambda ps: optim.AdamW(ps, lr=0.01),
    "rmsprop": lambda ps: optim.RMSprop(ps, lr=0.01),
    "rmsprop_centered_momentum": lambda ps: optim.RMSprop(
        ps, lr=0.01, centered=True, momentum=0.9, weight_decay=1e-3
    ),
}

SCHEDULES = {
    "step": lambda: optim.make_schedule("step", 0.1, step_size=2, gamma=0.5),
    "multistep": lambda: optim.make_schedule("multistep", 0.1, milestones=[1, 3]),
    "exponential": lambda: optim.make_schedule("exponential", 0.1, gamma=0.7),
    "cosine_warmup": lambda: optim.make_schedule("cosine", 0.1, total_steps=3, warmup_steps=2),
}


def _mlp():
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 4))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_agrees(name):
    batches = batches_of((6, 5), "labels", n=4)
    eager = run_mode("eager", _mlp, OPTIMIZERS[name], nn.cross_entropy, batches)
    graph = run_mode("graph", _mlp, OPTIMIZERS[name], nn.cross_entropy, batches)
    assert_agree(eager, graph)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_every_schedule_agrees(name, kind):
    def make(params):
        cls = optim.SGD if kind == "sgd" else optim.Adam
        extra = {"momentum": 0.9} if kind == "sgd" else {}
        return cls(params, schedule=SCHEDULES[name](), **extra)

    batches = batches_of((6, 5), "labels", n=5)
    eager = run_mode("eager", _mlp, make, nn.cross_entropy, batches)
    graph = run_mode("graph", _mlp, make, nn.cross_entropy, batches)
    assert_agree(eager, graph)


@pytest.mark.parametrize("clip", [0.05, 100.0])
def test_gradient_clipping_agrees(clip):
    batches = batches_of((6, 5), "labels")
    eager = run_mode("eager", _mlp, _sgd, nn.cross_entropy, batches, grad_clip=clip)
    graph = run_mode("graph", _mlp, _sgd, nn.cross_entropy, batches, grad_clip=clip)
    assert_agree(eager, graph)
    unclipped = run_mode("graph", _mlp, _sgd, nn.cross_entropy, batches)
    changed = any(not np.allclose(unclipped.params[k], graph.params[k]) for k in graph.params)
    assert changed == (clip < 1)


@pytest.mark.parametrize("disabled", [(), ("fuse",), tuple(PASSES)])
@pytest.mark.parametrize("plan_memory", [True, False])
def test_passes_and_planning_are_exact(disabled, plan_memory):
    """Every pass and the planner keep the numbers: bit-for-bit equal to eager mode."""

    def build():
        return nn.Sequential(
            nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 4)
        )

    batches = batches_of((6, 5), "labels", n=3)
    eager = run_mode("eager", build, _sgd, nn.cross_entropy, batches)
    graph = run_mode(
        "graph",
        build,
        _sgd,
        nn.cross_entropy,
        batches,
        disabled_passes=disabled,
        plan_memory=plan_memory,
    )
    assert graph.losses == eager.losses
    for name, value in eager.params.items():
        np.testing.assert_array_equal(graph.params[name], value, err_msg=name)


def test_float64_agrees():
    batches = batches_of((6, 5), "labels")
    eager = run_mode("eager", _mlp, _sgd, nn.cross_entropy, batches, dtype=np.float64)
    graph = run_mode("graph", _mlp, _sgd, nn.cross_entropy, batches, dtype=np.float64)
    assert_agree(eager, graph, loss_rtol=1e-12, param_atol=1e-12)
    assert graph.params["0.weight"].dtype == np.float64


def test_alternating_modes_on_one_model_agrees_with_eager_alone():
    """A graph step picks up what an eager step (or a checkpoint load) left, and vice versa."""

    def build():
        return nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.2), nn.ReLU(), nn.Linear(8, 4))

    batches = batches_of((6, 5), "labels", n=6)
    eager = run_mode("eager", build, _sgd, nn.cross_entropy, batches)
    manual_seed(0)
    model = build()
    optimizer = _sgd(model.parameters())
    steps = {
        mode: make_step(mode, model, nn.cross_entropy, optimizer, device=CPU, dtype=np.float32)
        for mode in ("eager", "graph")
    }
    losses = [steps["graph" if i % 2 else "eager"].train(x, y) for i, (x, y) in enumerate(batches)]
    np.testing.assert_allclose(losses, eager.losses, rtol=1e-6)
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value, eager.params[name], atol=1e-5)


def test_agrees_on_each_device(device):
    """On CuPy, graph mode's fused ElementwiseKernels against eager mode's separate kernels."""

    def build():
        return nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1),
            nn.BatchNorm2d(3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(12, 4),
        )

    def adam(params):
        return optim.Adam(params, lr=0.01)

    batches = batches_of((4, 4, 4, 2), "labels")
    eager = run_mode("eager", build, adam, nn.cross_entropy, batches, device=device)
    graph = run_mode("graph", build, adam, nn.cross_entropy, batches, device=device)
    assert_agree(eager, graph)
