"""The arguments of every optimizer and schedule, declared as `spec.Arg`s for the config loader.

They mirror the constructors (`make_optimizer`, `make_schedule`): the same names, defaults
and ranges, so a config that passes validation never fails when the trainer builds it; a
test holds the two together. Two deliberate differences, both about what a config means:
`lr` must be > 0 (a rate of 0 never trains), and cosine's `total_steps` may be null, which
asks the trainer for "the rest of the run after warmup". Rules that tie two arguments
together, which one `Arg` cannot state, are `optimizer_conflicts` / `schedule_conflicts`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainctl.spec import REQUIRED, Arg, ArgError, Entry


def _lr(default: Any = REQUIRED) -> Arg:
    return Arg("float", default, "learning rate", low=0, low_open=True)


_WEIGHT_DECAY = Arg("float", 0.0, "L2 penalty added to the gradient", low=0)
_EPS = Arg("float", 1e-8, "added to the denominator for stability", low=0)
_BETAS = Arg(
    "floats",
    [0.9, 0.999],
    "decay rates [beta1, beta2] of the moment averages",
    low=0,
    high=1,
    high_open=True,
)


def _adam(name: str, help: str, weight_decay: Arg) -> Entry:
    return Entry(
        name,
        {
            "lr": _lr(1e-3),
            "betas": _BETAS,
            "eps": _EPS,
            "weight_decay": weight_decay,
        },
        help,
    )


OPTIMIZER_ENTRIES: dict[str, Entry] = {
    entry.name: entry
    for entry in (
        Entry(
            "sgd",
            {
                "lr": _lr(),
                "momentum": Arg("float", 0.0, "momentum factor", low=0, high=1, high_open=True),
                "nesterov": Arg("bool", False, "Nesterov momentum (needs momentum > 0)"),
                "weight_decay": _WEIGHT_DECAY,
                "dampening": Arg("float", 0.0, "dampening of the momentum", low=0, high=1),
            },
            "stochastic gradient descent, with optional (Nesterov) momentum",
        ),
        _adam("adam", "Adam, weight decay added to the gradient (L2)", _WEIGHT_DECAY),
        _adam(
            "adamw",
            "Adam with decoupled weight decay",
            Arg("float", 0.01, "decoupled weight decay: p *= 1 - lr * weight_decay", low=0),
        ),
        Entry(
            "rmsprop",
            {
                "lr": _lr(1e-2),
                "alpha": Arg(
                    "float",
                    0.99,
                    "decay of the squared-gradient average",
                    low=0,
                    high=1,
                    high_open=True,
                ),
                "eps": _EPS,
                "momentum": Arg("float", 0.0, "momentum factor", low=0, high=1, high_open=True),
                "weight_decay": _WEIGHT_DECAY,
                "centered": Arg("bool", False, "divide by the gradient's variance estimate"),
            },
            "RMSprop",
        ),
    )
}

_GAMMA = Arg("float", 0.1, "multiplies the rate at each decay", low=0, low_open=True)

SCHEDULE_ENTRIES: dict[str, Entry] = {
    entry.name: entry
    for entry in (
        Entry("constant", {}, "the optimizer's lr throughout"),
        Entry(
            "step",
            {
                "step_size": Arg("int", help="updates between decays", low=1),
                "gamma": _GAMMA,
            },
            "lr * gamma ** (step // step_size)",
        ),
        Entry(
            "multistep",
            {
                "milestones": Arg("ints", help="strictly increasing update counts", low=1),
                "gamma": _GAMMA,
            },
            "lr * gamma ** (number of milestones passed)",
        ),
        Entry(
            "exponential",
            {"gamma": Arg("float", help="decay per update", low=0, low_open=True)},
            "lr * gamma ** step",
        ),
        Entry(
            "cosine",
            {
                "total_steps": Arg(
                    "int",
                    None,
                    "updates of the decay (null: the rest of the run after warmup)",
                    low=1,
                    nullable=True,
                ),
                "min_lr": Arg("float", 0.0, "the rate at the end (at most lr)", low=0),
            },
            "half a cosine from lr down to min_lr, then min_lr",
        ),
    )
}


def optimizer_conflicts(name: str, args: Mapping[str, Any]) -> list[tuple[str, ArgError]]:
    """(argument, error) for each rule between checked arguments of optimizer `name` broken."""
    conflicts = []
    if name in ("adam", "adamw") and len(args["betas"]) != 2:
        expected = "a pair [beta1, beta2] of numbers in [0, 1)"
        conflicts.append(("betas", ArgError(expected, args["betas"])))
    if name == "sgd" and args["nesterov"] and (args["momentum"] == 0 or args["dampening"] != 0):
        expected = "false unless momentum > 0 and dampening = 0"
        conflicts.append(("nesterov", ArgError(expected, True)))
    return conflicts


def schedule_conflicts(
    name: str, args: Mapping[str, Any], base_lr: float
) -> list[tuple[str, ArgError]]:
    """(argument, error) for each rule of schedule `name` broken, given the optimizer's lr."""
    conflicts = []
    if name == "multistep" and args["milestones"] != sorted(set(args["milestones"])):
        expected = "a strictly increasing list of integers >= 1"
        conflicts.append(("milestones", ArgError(expected, args["milestones"])))
    if name == "cosine" and args["min_lr"] > base_lr:
        expected = f"a number in [0, {base_lr:g}] (at most the optimizer's lr)"
        conflicts.append(("min_lr", ArgError(expected, args["min_lr"])))
    return conflicts
