"""Learning-rate schedules: pure functions of the step index.

`lr_at(step)` is the learning rate of the update that follows `step` completed updates (the
first update uses `lr_at(0)`, as a PyTorch scheduler before its first `step()`). A schedule
keeps no state of its own: the optimizer's `step_count` is all a resume needs to continue it
exactly.

Linear warmup wraps any schedule. During the first `warmup_steps` updates the rate climbs
linearly from `start_factor * base_lr` towards `base_lr`; after that the wrapped schedule runs
with its clock restarted at 0 (PyTorch's SequentialLR does the same). So `cosine` with warmup
decays over `total_steps` updates *after* warmup: for a run of N updates and W warmup steps,
pass `total_steps=N - W`.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trainctl.errors import OptimizerError
from trainctl.optim.checks import check_arguments, check_names, int_at_least, real_in


class Schedule:
    """Base of the schedules: subclasses provide `base_lr` and `_lr(step)`."""

    base_lr: float

    def lr_at(self, step: int) -> float:
        """The learning rate after `step` completed updates."""
        return self._lr(int_at_least(type(self).__name__, "step", step, 0))

    def _lr(self, step: int) -> float:
        raise NotImplementedError


@dataclass
class ConstantLR(Schedule):
    base_lr: float

    def __post_init__(self) -> None:
        self.base_lr = real_in("constant schedule", "base_lr", self.base_lr)

    def _lr(self, step: int) -> float:
        return self.base_lr


@dataclass
class StepLR(Schedule):
    """base_lr * gamma ** (step // step_size)."""

    base_lr: float
    step_size: int
    gamma: float = 0.1

    def __post_init__(self) -> None:
        self.base_lr = real_in("step schedule", "base_lr", self.base_lr)
        self.step_size = int_at_least("step schedule", "step_size", self.step_size, 1)
        self.gamma = real_in("step schedule", "gamma", self.gamma, low_closed=False)

    def _lr(self, step: int) -> float:
        return self.base_lr * self.gamma ** (step // self.step_size)


@dataclass
class MultiStepLR(Schedule):
    """base_lr * gamma ** (number of milestones <= step)."""

    base_lr: float
    milestones: Sequence[int]
    gamma: float = 0.1

    def __post_init__(self) -> None:
        owner = "multistep schedule"
        self.base_lr = real_in(owner, "base_lr", self.base_lr)
        self.gamma = real_in(owner, "gamma", self.gamma, low_closed=False)
        if isinstance(self.milestones, (str, bytes)) or not isinstance(self.milestones, Sequence):
            raise OptimizerError(f"{owner}: milestones must be a list of step indices")
        milestones = [int_at_least(owner, "milestones[]", m, 1) for m in self.milestones]
        if not milestones or milestones != sorted(set(milestones)):
            raise OptimizerError(
                f"{owner}: milestones must be a non-empty, strictly increasing list, "
                f"got {list(self.milestones)}"
            )
        self.milestones = tuple(milestones)

    def _lr(self, step: int) -> float:
        return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, step)


@dataclass
class ExponentialLR(Schedule):
    """base_lr * gamma ** step."""

    base_lr: float
    gamma: float

    def __post_init__(self) -> None:
        self.base_lr = real_in("exponential schedule", "base_lr", self.base_lr)
        self.gamma = real_in("exponential schedule", "gamma", self.gamma, low_closed=False)

    def _lr(self, step: int) -> float:
        return self.base_lr * self.gamma**step


@dataclass
class CosineLR(Schedule):
    """Half a cosine from base_lr down to min_lr over total_steps, then min_lr.

    Unlike PyTorch's CosineAnnealingLR, whose closed form climbs back up after T_max, the rate
    stays at min_lr once the decay is done.
    """

    base_lr: float
    total_steps: int
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        self.base_lr = real_in("cosine schedule", "base_lr", self.base_lr)
        self.total_steps = int_at_least("cosine schedule", "total_steps", self.total_steps, 1)
        self.min_lr = real_in(
            "cosine schedule", "min_lr", self.min_lr, 0.0, self.base_lr, high_closed=True
        )

    def _lr(self, step: int) -> float:
        progress = min(step, self.total_steps) / self.total_steps
        return self.min_lr + (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * progress)) / 2


@dataclass
class LinearWarmup(Schedule):
    """`steps` updates climbing linearly from start_factor * base_lr, then `schedule` from 0."""

    schedule: Schedule
    steps: int
    start_factor: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, Schedule):
            raise OptimizerError(f"warmup wraps a Schedule, got {type(self.schedule).__name__}")
        self.steps = int_at_least("warmup", "warmup_steps", self.steps, 1)
        self.start_factor = real_in(
            "warmup", "warmup_start_factor", self.start_factor, 0.0, 1.0, high_closed=True
        )

    @property
    def base_lr(self) -> float:
        return self.schedule.base_lr

    def _lr(self, step: int) -> float:
        if step >= self.steps:
            return self.schedule.lr_at(step - self.steps)
        factor = self.start_factor + (1.0 - self.start_factor) * step / self.steps
        return self.base_lr * factor


SCHEDULES: dict[str, type[Schedule]] = {
    "constant": ConstantLR,
    "step": StepLR,
    "multistep": MultiStepLR,
    "exponential": ExponentialLR,
    "cosine": CosineLR,
}


def make_schedule(
    name: str,
    base_lr: float,
    *,
    warmup_steps: int = 0,
    warmup_start_factor: float = 0.0,
    **kwargs: Any,
) -> Schedule:
    """The schedule called `name` (see SCHEDULES), wrapped in linear warmup if warmup_steps > 0.

    Example: make_schedule("cosine", 0.1, total_steps=900, warmup_steps=100).
    """
    cls = check_names("schedule", name, SCHEDULES)
    fields = [f for f in dataclasses.fields(cls) if f.name != "base_lr"]
    required = [f.name for f in fields if f.default is dataclasses.MISSING]
    check_arguments(
        f"schedule {name!r}",
        kwargs,
        [f.name for f in fields] + ["warmup_steps", "warmup_start_factor"],
        required,
    )
    schedule = cls(base_lr, **kwargs)
    warmup_steps = int_at_least("warmup", "warmup_steps", warmup_steps, 0)
    real_in("warmup", "warmup_start_factor", warmup_start_factor, 0.0, 1.0, high_closed=True)
    if warmup_steps == 0:
        return schedule
    return LinearWarmup(schedule, warmup_steps, warmup_start_factor)
