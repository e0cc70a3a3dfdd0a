"""OPTIMIZER_ENTRIES / SCHEDULE_ENTRIES say exactly what the constructors accept, so a config
that validates never fails when the trainer builds its optimizer and schedule."""

import dataclasses
import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainctl.autograd import Tensor
from trainctl.errors import OptimizerError
from trainctl.optim import (
    OPTIMIZER_ENTRIES,
    OPTIMIZERS,
    SCHEDULE_ENTRIES,
    SCHEDULES,
    make_optimizer,
    make_schedule,
    optimizer_conflicts,
    schedule_conflicts,
)
from trainctl.spec import REQUIRED, Arg, ArgError

# Values for required arguments, and what the trainer puts in for cosine's total_steps: null.
VALID = {"lr": 0.1, "step_size": 10, "milestones": [5, 10], "gamma": 0.5, "total_steps": 100}
BASE_LR = 0.5


def _constructor_defaults(name: str, kind: str) -> dict:
    if kind == "optimizer":
        cls = OPTIMIZERS[name]
        skip = ("params", "schedule")
        defaults = {
            n: p.default for n, p in inspect.signature(cls).parameters.items() if n not in skip
        }
        defaults["lr"] = REQUIRED if cls.default_lr is None else cls.default_lr
    else:
        fields = [f for f in dataclasses.fields(SCHEDULES[name]) if f.name != "base_lr"]
        defaults = {
            f.name: REQUIRED if f.default is dataclasses.MISSING else f.default for f in fields
        }
    return {n: list(d) if isinstance(d, tuple) else d for n, d in defaults.items()}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_entry_has_the_constructors_arguments_and_defaults(name):
    entry = OPTIMIZER_ENTRIES[name]
    assert entry.name == name
    defaults = {n: arg.default for n, arg in entry.args.items()}
    assert defaults == _constructor_defaults(name, "optimizer")


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_entry_has_the_constructors_arguments_and_defaults(name):
    entry = SCHEDULE_ENTRIES[name]
    assert entry.name == name
    defaults = {n: arg.default for n, arg in entry.args.items()}
    expected = _constructor_defaults(name, "schedule")
    if name == "cosine":  # the one deliberate difference: null asks for the whole run
        assert expected["total_steps"] is REQUIRED and entry.args["total_steps"].nullable
        expected["total_steps"] = None
    assert defaults == expected


def test_every_optimizer_and_schedule_has_an_entry():
    assert OPTIMIZER_ENTRIES.keys() == OPTIMIZERS.keys()
    assert SCHEDULE_ENTRIES.keys() == SCHEDULES.keys()


def _entry_accepts(kind: str, name: str, raw: dict) -> bool:
    entry = (OPTIMIZER_ENTRIES if kind == "optimizer" else SCHEDULE_ENTRIES)[name]
    try:
        checked = {
            key: arg.check(raw[key]) if key in raw else arg.default
            for key, arg in entry.args.items()
        }
    except ArgError:
        return False
    if kind == "optimizer":
        return not optimizer_conflicts(name, checked)
    return not schedule_conflicts(name, checked, BASE_LR)


def _constructor_accepts(kind: str, name: str, raw: dict) -> bool:
    try:
        if kind == "optimizer":
            make_optimizer(name, [Tensor(np.zeros(2), requires_grad=True)], **raw)
        else:
            if name == "cosine" and raw.get("total_steps") is None:
                raw = {**raw, "total_steps": VALID["total_steps"]}
            make_schedule(name, BASE_LR, **raw)
    except OptimizerError:
        return False
    return True


def _filled(kind: str, name: str, args: dict) -> dict:
    entry = (OPTIMIZER_ENTRIES if kind == "optimizer" else SCHEDULE_ENTRIES)[name]
    required = {n: VALID[n] for n, arg in entry.args.items() if arg.required}
    return {**required, **args}


_NUMBERS = st.one_of(
    st.sampled_from([-1.0, -1e-9, 0.0, 1e-9, 0.5, 0.999, 1.0, 1.0 + 1e-9, 2.0]),
    st.floats(-2, 3),
    st.integers(-2, 3),
)


def _values(arg: Arg) -> st.SearchStrategy:
    strategy = {
        "bool": st.booleans(),
        "int": st.integers(-2, 30),
        "float": _NUMBERS,
        "floats": st.lists(_NUMBERS, max_size=3),
        "ints": st.lists(st.integers(-2, 30), max_size=4),
    }[arg.kind]
    return st.one_of(strategy, st.none()) if arg.nullable else strategy


CASES = [("optimizer", n) for n in OPTIMIZER_ENTRIES] + [("schedule", n) for n in SCHEDULE_ENTRIES]


@pytest.mark.parametrize(("kind", "name"), CASES)
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_entry_and_constructor_accept_the_same_values(kind, name, data):
    entry = (OPTIMIZER_ENTRIES if kind == "optimizer" else SCHEDULE_ENTRIES)[name]
    chosen = data.draw(
        st.sets(st.sampled_from(sorted(entry.args))) if entry.args else st.just(set())
    )
    raw = _filled(kind, name, {key: data.draw(_values(entry.args[key])) for key in chosen})
    if raw.get("lr") == 0:  # deliberate: a config asks for lr > 0, the constructor allows 0
        assert not _entry_accepts(kind, name, raw)
        zero_ok = _constructor_accepts(kind, name, raw)
        raw = {**raw, "lr": VALID["lr"]}
        assert zero_ok == _constructor_accepts(kind, name, raw)
    assert _entry_accepts(kind, name, raw) == _constructor_accepts(kind, name, raw), raw


@pytest.mark.parametrize(("kind", "name"), CASES)
def test_range_bounds_are_the_constructors(kind, name):
    """Exactly at each bound, and just past it, the entry and the constructor agree."""
    entry = (OPTIMIZER_ENTRIES if kind == "optimizer" else SCHEDULE_ENTRIES)[name]
    checked = 0
    for key, arg in entry.args.items():
        if key == "lr" or arg.kind not in ("int", "float", "floats"):
            continue
        step = 1 if arg.kind == "int" else 1e-9
        for bound in (arg.low, arg.high):
            if bound is None:
                continue
            for value in (bound - step, bound, bound + step):
                value = int(value) if arg.kind == "int" else value
                given = [value, 0.5] if arg.kind == "floats" else value
                raw = _filled(kind, name, {key: given})
                assert _entry_accepts(kind, name, raw) == _constructor_accepts(kind, name, raw), (
                    key,
                    value,
                )
                checked += 1
    assert checked > 0 or all(a.kind == "bool" or k == "lr" for k, a in entry.args.items())


@pytest.mark.parametrize(
    ("name", "args", "key", "message"),
    [
        ("adam", {"betas": [0.9]}, "betas", "expected a pair [beta1, beta2] of numbers in [0, 1)"),
        ("sgd", {"lr": 0.1, "nesterov": True}, "nesterov", "expected false unless momentum > 0"),
        (
            "sgd",
            {"lr": 0.1, "nesterov": True, "momentum": 0.9, "dampening": 0.1},
            "nesterov",
            "and dampening = 0, found true",
        ),
    ],
)
def test_optimizer_conflicts_name_the_argument(name, args, key, message):
    entry = OPTIMIZER_ENTRIES[name]
    resolved = {n: args.get(n, arg.default) for n, arg in entry.args.items()}
    ((found_key, error),) = optimizer_conflicts(name, resolved)
    assert found_key == key and message in str(error)


def test_schedule_conflicts_check_min_lr_against_the_optimizers_lr():
    assert schedule_conflicts("cosine", {"total_steps": None, "min_lr": 0.1}, 0.1) == []
    ((key, error),) = schedule_conflicts("cosine", {"total_steps": None, "min_lr": 0.2}, 0.1)
    assert key == "min_lr"
    assert str(error) == "expected a number in [0, 0.1] (at most the optimizer's lr), found 0.2"
