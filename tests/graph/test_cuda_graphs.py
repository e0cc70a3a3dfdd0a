"""CUDA graphs: the device-scalar programs they need (checked on the CPU), and on a GPU the
captured step against the same step launched op by op."""

import pytest
from devices import cuda_only
from graph_helpers import assert_agree, batches_of, run_mode

from trainctl import nn, optim
from trainctl.backend import get_device
from trainctl.errors import DataError

OPTIMIZERS = {
    # a schedule: the learning rate, a host number, changes every step
    "sgd_nesterov_cosine": lambda ps: optim.SGD(
        ps,
        lr=0.1,
        momentum=0.9,
        nesterov=True,
        weight_decay=1e-3,
        schedule=optim.make_schedule("cosine", 0.1, total_steps=6),
    ),
    # bias corrections: host numbers computed from the step count
    "adamw": lambda ps: optim.AdamW(ps, lr=0.01, weight_decay=0.01),
    "rmsprop_centered": lambda ps: optim.RMSprop(ps, lr=0.01, momentum=0.5, centered=True),
}


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4)
    )


def with_dropout() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Dropout(0.3), nn.Linear(16, 4))


BATCHES = batches_of((8, 3, 4), "labels", n=6)


def assert_identical(a, b) -> None:
    assert a.losses == b.losses
    for name, value in a.params.items():
        assert b.params[name].tobytes() == value.tobytes(), name
    for index, entry in a.optimizer["state"].items():
        for name, value in entry.items():
            assert b.optimizer["state"][index][name].tobytes() == value.tobytes(), name
    assert a.outputs.tobytes() == b.outputs.tobytes()


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_device_scalars_give_the_plain_programs_numbers_bit_for_bit(kind):
    # The jit pass's loops take host numbers as Python floats: it is NumPy's, never CuPy's.
    options = {"disabled_passes": ("jit",)}
    plain = run_mode("graph", mlp, OPTIMIZERS[kind], nn.cross_entropy, BATCHES, **options)
    device = run_mode(
        "graph", mlp, OPTIMIZERS[kind], nn.cross_entropy, BATCHES, device_scalars=True, **options
    )
    assert_identical(plain, device)
    (compiled,) = [c for c in device.step.traced.compiled if c.signature[0] == "train"]
    source = compiled.program.source
    assert "def host_values(" in source and "def device_step(" in source
    # The device half takes no host numbers: the learning rate is read from `scalars`.
    device_half = source[source.index("def device_step(") :].split("\ndef ")[0]
    assert "s_lr" not in device_half and "scalars" in device_half


def test_device_scalar_programs_check_class_labels_on_the_host():
    x, y = BATCHES[0]
    bad = y.copy()
    bad[3] = 7
    run = run_mode(
        "graph",
        mlp,
        OPTIMIZERS["adamw"],
        nn.cross_entropy,
        BATCHES[:1],
        device_scalars=True,
        disabled_passes=("jit",),
    )
    with pytest.raises(DataError, match=r"class labels must be in \[0, 4\).*\[0, 7\]"):
        run.step.train(x, bad)


# ---------------------------------------------------------------- on a GPU


def _cuda_run(build, kind, cuda_graphs, batches=BATCHES, device_scalars=None):
    return run_mode(
        "graph",
        build,
        OPTIMIZERS[kind],
        nn.cross_entropy,
        batches,
        device=get_device("cuda"),
        cuda_graphs=cuda_graphs,
        device_scalars=device_scalars,
    )


def _train_status(run) -> dict:
    train = [s for s in run.step.stats()["signatures"] if s["kind"] == "train"]
    return train[0]["cuda_graph"]


@cuda_only
@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_a_captured_step_computes_what_the_launched_one_does(kind):
    # The same program launched op by op, then replayed from its CUDA graph: bit for bit.
    launched = _cuda_run(mlp, kind, cuda_graphs=False, device_scalars=True)
    captured = _cuda_run(mlp, kind, cuda_graphs=True)
    status = _train_status(captured)
    assert status["captured"], status
    assert status["nodes"].get("kernel", 0) > 10, status
    assert_identical(launched, captured)
    # And the program CUDA graphs need agrees with the plain one (cuBLAS may be called
    # another way: status["matmul"] says whether that is bit for bit too).
    assert_agree(_cuda_run(mlp, kind, cuda_graphs=False), captured)


@cuda_only
def test_a_step_that_draws_random_numbers_is_not_captured_and_says_why():
    launched = _cuda_run(with_dropout, "adamw", cuda_graphs=False)
    captured = _cuda_run(with_dropout, "adamw", cuda_graphs=True)
    assert_identical(launched, captured)
    status = _train_status(captured)
    assert not status["captured"] and "random" in status["reason"]


@cuda_only
def test_each_batch_shape_is_captured_once():
    batches = BATCHES[:3] + batches_of((5, 3, 4), "labels", n=3, seed=2)
    launched = _cuda_run(mlp, "adamw", cuda_graphs=False, batches=batches, device_scalars=True)
    captured = _cuda_run(mlp, "adamw", cuda_graphs=True, batches=batches)
    assert_identical(launched, captured)
    train = [s for s in captured.step.stats()["signatures"] if s["kind"] == "train"]
    assert len(train) == 2 and all(s["cuda_graph"]["captured"] for s in train)
