"""PyTorch as the oracle: ten float64 updates with identical gradients, and the LR schedules."""

import numpy as np
import pytest

from trainctl.autograd import Tensor
from trainctl.optim import (
    SGD,
    Adam,
    AdamW,
    CosineLR,
    ExponentialLR,
    MultiStepLR,
    RMSprop,
    StepLR,
    make_schedule,
)

torch = pytest.importorskip("torch")

SHAPES = [(4, 3), (3,)]
STEPS = 10

# (ours, theirs): the same settings for trainctl and torch.optim
CASES = {
    "sgd": (lambda ps: SGD(ps, lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
    "sgd_momentum_dampening_weight_decay": (
        lambda ps: SGD(ps, lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01),
    ),
    "sgd_nesterov": (
        lambda ps: SGD(ps, lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1),
    ),
    "adam": (
        lambda ps: Adam(ps, lr=0.01, betas=(0.8, 0.95)),
        lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.95)),
    ),
    "adam_weight_decay": (
        lambda ps: Adam(ps, lr=0.01, eps=1e-3, weight_decay=0.1),
        lambda ps: torch.optim.Adam(ps, lr=0.01, eps=1e-3, weight_decay=0.1),
    ),
    "adamw": (
        lambda ps: AdamW(ps, lr=0.01, weight_decay=0.1),
        lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1),
    ),
    "rmsprop": (lambda ps: RMSprop(ps), lambda ps: torch.optim.RMSprop(ps)),
    "rmsprop_momentum_weight_decay": (
        lambda ps: RMSprop(ps, lr=0.01, alpha=0.9, momentum=0.9, weight_decay=0.05),
        lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, momentum=0.9, weight_decay=0.05),
    ),
    "rmsprop_centered_momentum": (
        lambda ps: RMSprop(ps, lr=0.01, eps=1e-4, momentum=0.5, centered=True),
        lambda ps: torch.optim.RMSprop(ps, lr=0.01, eps=1e-4, momentum=0.5, centered=True),
    ),
}


def initial_values():
    rng = np.random.default_rng(1)
    return [rng.standard_normal(shape) for shape in SHAPES]


def gradients(step):
    rng = np.random.default_rng(1000 + step)
    return [rng.standard_normal(shape) for shape in SHAPES]


@pytest.mark.parametrize("name", CASES)
def test_ten_steps_match_torch_optim(name):
    make_ours, make_theirs = CASES[name]
    ours = [Tensor(v.copy(), requires_grad=True) for v in initial_values()]
    theirs = [torch.tensor(v.copy(), requires_grad=True) for v in initial_values()]
    optimizer, reference = make_ours(ours), make_theirs(theirs)
    for step in range(STEPS):
        for a, b, g in zip(ours, theirs, gradients(step), strict=True):
            a.grad = Tensor(g.copy())
            b.grad = torch.tensor(g.copy())
        optimizer.step()
        reference.step()
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(
                a.numpy(), b.detach().numpy(), rtol=1e-12, atol=1e-14, err_msg=f"step {step}"
            )
    assert optimizer.step_count == STEPS


def torch_lrs(make_scheduler, steps=30):
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=0.1)
    scheduler = make_scheduler(optimizer)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


LR = torch.optim.lr_scheduler
SCHEDULES = {
    "step": (StepLR(0.1, 4, 0.5), lambda o: LR.StepLR(o, 4, 0.5)),
    "multistep": (MultiStepLR(0.1, [3, 7, 20], 0.3), lambda o: LR.MultiStepLR(o, [3, 7, 20], 0.3)),
    "exponential": (ExponentialLR(0.1, 0.9), lambda o: LR.ExponentialLR(o, 0.9)),
    "cosine": (CosineLR(0.1, 30, 0.01), lambda o: LR.CosineAnnealingLR(o, 30, 0.01)),
    "warmup_cosine": (
        make_schedule("cosine", 0.1, total_steps=25, warmup_steps=5, warmup_start_factor=0.25),
        lambda o: LR.SequentialLR(
            o,
            [LR.LinearLR(o, 0.25, total_iters=5), LR.CosineAnnealingLR(o, 25)],
            milestones=[5],
        ),
    ),
}


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedules_match_torch_lr_schedulers(name):
    schedule, make_scheduler = SCHEDULES[name]
    ours = [schedule.lr_at(step) for step in range(30)]
    np.testing.assert_allclose(ours, torch_lrs(make_scheduler), rtol=1e-9, atol=1e-12)
