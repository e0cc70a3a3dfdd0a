"""Each schedule against its formula at chosen steps, warmup and milestone boundaries included."""

import math

import numpy as np
import pytest

from trainctl.autograd import Tensor
from trainctl.errors import OptimizerError, TrainctlError
from trainctl.optim import (
    SGD,
    Adam,
    ConstantLR,
    CosineLR,
    ExponentialLR,
    LinearWarmup,
    MultiStepLR,
    StepLR,
    make_schedule,
)


def cosine(base, low, step, total):
    return low + (base - low) * (1 + math.cos(math.pi * step / total)) / 2


CASES = [
    ("constant", ConstantLR(0.1), {0: 0.1, 1: 0.1, 10_000: 0.1}),
    ("step", StepLR(0.1, step_size=3, gamma=0.5), {0: 0.1, 2: 0.1, 3: 0.05, 5: 0.05, 6: 0.025}),
    (
        "multistep",
        MultiStepLR(0.1, milestones=[2, 5], gamma=0.1),
        {0: 0.1, 1: 0.1, 2: 0.01, 4: 0.01, 5: 0.001, 100: 0.001},
    ),
    ("exponential", ExponentialLR(0.1, gamma=0.9), {0: 0.1, 1: 0.09, 3: 0.1 * 0.9**3}),
    (
        "cosine",
        CosineLR(0.1, total_steps=10, min_lr=0.01),
        {0: 0.1, 2: cosine(0.1, 0.01, 2, 10), 5: 0.055, 9: cosine(0.1, 0.01, 9, 10), 10: 0.01},
    ),
    ("cosine_after_the_end", CosineLR(0.1, total_steps=10), {11: 0.0, 1000: 0.0}),
    (
        # Warmup from 0.2 * base over 4 steps, then the cosine's clock starts again at 0.
        "warmup_cosine",
        make_schedule("cosine", 0.1, total_steps=10, warmup_steps=4, warmup_start_factor=0.2),
        {
            0: 0.02,
            1: 0.1 * (0.2 + 0.8 * 1 / 4),
            3: 0.1 * (0.2 + 0.8 * 3 / 4),
            4: 0.1,
            5: cosine(0.1, 0.0, 1, 10),
            9: cosine(0.1, 0.0, 5, 10),
            14: 0.0,
        },
    ),
    (
        "warmup_multistep",
        make_schedule("multistep", 1.0, milestones=[3], gamma=0.5, warmup_steps=2),
        {0: 0.0, 1: 0.5, 2: 1.0, 4: 1.0, 5: 0.5, 6: 0.5},
    ),
    (
        "warmup_constant",
        make_schedule("constant", 0.3, warmup_steps=3),
        {0: 0.0, 1: 0.1, 2: 0.2, 3: 0.3, 50: 0.3},
    ),
]


@pytest.mark.parametrize(("name", "schedule", "expected"), CASES, ids=[c[0] for c in CASES])
def test_schedule_matches_its_formula(name, schedule, expected):
    for step, lr in expected.items():
        assert schedule.lr_at(step) == pytest.approx(lr, rel=1e-12, abs=1e-15), f"step {step}"


def test_make_schedule_builds_the_named_schedule():
    schedule = make_schedule("step", 0.5, step_size=4, gamma=0.25)
    assert schedule == StepLR(0.5, 4, 0.25)
    wrapped = make_schedule("exponential", 0.5, gamma=0.9, warmup_steps=3)
    assert isinstance(wrapped, LinearWarmup)
    assert wrapped.schedule == ExponentialLR(0.5, 0.9)
    assert wrapped.base_lr == 0.5


def test_optimizer_lr_follows_the_schedule_and_is_applied():
    schedule = make_schedule("step", 1.0, step_size=2, gamma=0.5, warmup_steps=2)
    param = Tensor(np.zeros(1), requires_grad=True)
    optimizer = SGD([param], schedule=schedule)
    position = 0.0
    for step in range(8):
        assert optimizer.lr == schedule.lr_at(step)
        param.grad = Tensor(np.ones(1))
        optimizer.step()
        position -= schedule.lr_at(step)
        assert param.numpy()[0] == pytest.approx(position, rel=1e-15)
    assert position == pytest.approx(-(0.0 + 0.5 + 1 + 1 + 0.5 + 0.5 + 0.25 + 0.25))


def test_optimizer_default_lr_and_schedule_base_lr():
    param = Tensor(np.zeros(1), requires_grad=True)
    assert Adam([param]).lr == 1e-3
    assert Adam([param], schedule=ConstantLR(0.02)).lr == 0.02
    assert Adam([param], lr=0.02, schedule=ConstantLR(0.02)).lr == 0.02


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("cosin", {"total_steps": 10}, "did you mean 'cosine'"),
        ("linear", {}, "expected one of constant, cosine, exponential, multistep, step"),
        ("step", {"step_sz": 3}, "unknown argument 'step_sz' (did you mean 'step_size'?)"),
        ("cosine", {}, "needs the argument(s): total_steps"),
        ("step", {"step_size": 0}, "step_size must be an integer >= 1, got 0"),
        ("step", {"step_size": 2.5}, "step_size must be an integer >= 1, got 2.5"),
        ("step", {"step_size": 2, "gamma": 0}, "gamma must be in (0, inf), got 0"),
        ("exponential", {"gamma": -0.5}, "gamma must be in (0, inf)"),
        ("multistep", {"milestones": [5, 2]}, "strictly increasing"),
        ("multistep", {"milestones": [3, 3]}, "strictly increasing"),
        ("multistep", {"milestones": []}, "non-empty"),
        ("multistep", {"milestones": [0, 2]}, "milestones[] must be an integer >= 1, got 0"),
        ("multistep", {"milestones": 5}, "milestones must be a list"),
        ("cosine", {"total_steps": 0}, "total_steps must be an integer >= 1"),
        ("cosine", {"total_steps": 10, "min_lr": 0.5}, "min_lr must be in [0, 0.1], got 0.5"),
        ("constant", {"warmup_steps": -1}, "warmup_steps must be an integer >= 0, got -1"),
        ("constant", {"warmup_start_factor": 1.5}, "warmup_start_factor must be in [0, 1]"),
    ],
)
def test_make_schedule_rejects_bad_names_and_arguments(name, kwargs, message):
    with pytest.raises(OptimizerError) as error:
        make_schedule(name, 0.1, **kwargs)
    assert message in str(error.value)


def test_schedule_errors_are_trainctl_errors_and_bad_values_are_named():
    assert issubclass(OptimizerError, TrainctlError)
    with pytest.raises(OptimizerError, match=r"base_lr must be in \[0, inf\), got -1"):
        make_schedule("constant", -1)
    with pytest.raises(OptimizerError, match="step must be an integer >= 0, got -1"):
        ConstantLR(0.1).lr_at(-1)
    with pytest.raises(OptimizerError, match="warmup wraps a Schedule"):
        LinearWarmup(0.1, 3)
