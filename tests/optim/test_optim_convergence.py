"""End to end through autograd: every optimizer drives ||p - target||^2 down by over 100x."""

import numpy as np
import pytest

from trainctl.autograd import Tensor
from trainctl.optim import SGD, Adam, AdamW, RMSprop, make_schedule

TARGET = np.array([1.0, -2.0, 3.0, 0.5, -1.5])

OPTIMIZERS = {
    "sgd": lambda ps: SGD(ps, lr=0.1),
    "sgd_nesterov": lambda ps: SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    "sgd_warmup_cosine": lambda ps: SGD(
        ps, momentum=0.5, schedule=make_schedule("cosine", 0.1, total_steps=90, warmup_steps=10)
    ),
    "adam": lambda ps: Adam(ps, lr=0.1),
    "adamw": lambda ps: AdamW(ps, lr=0.1, weight_decay=1e-4),
    "rmsprop": lambda ps: RMSprop(ps, lr=0.05),
    "rmsprop_centered_momentum": lambda ps: RMSprop(ps, lr=0.01, momentum=0.5, centered=True),
}


def loss_of(param, target):
    return ((param - target) ** 2).sum()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_quadratic_loss_falls_over_100x(name):
    param = Tensor(np.zeros(5), requires_grad=True)
    target = Tensor(TARGET)
    optimizer = OPTIMIZERS[name]([param])
    first = loss_of(param, target).item()
    for _ in range(100):
        loss = loss_of(param, target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    last = loss_of(param, target).item()
    assert last < first / 100, f"loss {first:.3g} -> {last:.3g}"
