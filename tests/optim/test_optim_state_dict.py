"""state_dict / load_state_dict: an optimizer restored mid-run continues exactly as before."""

import json

import numpy as np
import pytest

from trainctl.autograd import Tensor
from trainctl.errors import StateDictError
from trainctl.optim import SGD, Adam, AdamW, RMSprop, make_schedule

SHAPES = [(2, 3), (3,)]

FACTORIES = {
    "sgd_nesterov_cosine": lambda ps: SGD(
        ps,
        momentum=0.9,
        nesterov=True,
        schedule=make_schedule("cosine", 0.1, total_steps=5, warmup_steps=2),
    ),
    "sgd_dampening": lambda ps: SGD(ps, lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.01),
    "adam_step_schedule": lambda ps: Adam(
        ps, weight_decay=0.01, schedule=make_schedule("step", 0.01, step_size=2, gamma=0.5)
    ),
    "adamw": lambda ps: AdamW(ps, lr=0.01),
    "rmsprop_centered_momentum": lambda ps: RMSprop(ps, lr=0.01, momentum=0.9, centered=True),
}


def make_params(values=None):
    rng = np.random.default_rng(0)
    values = values or [rng.standard_normal(shape) for shape in SHAPES]
    return [Tensor(np.array(v), requires_grad=True) for v in values]


def gradients(step):
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(shape) for shape in SHAPES]


def run(optimizer, steps):
    for step in steps:
        for param, g in zip(optimizer.params, gradients(step), strict=True):
            param.grad = Tensor(g)
        optimizer.step()
    return [p.numpy().copy() for p in optimizer.params]


def is_plain(value):
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and is_plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(is_plain(v) for v in value)
    return isinstance(value, (np.ndarray, int, float, bool, str))


@pytest.mark.parametrize("name", FACTORIES)
def test_restored_optimizer_continues_exactly(name):
    make = FACTORIES[name]
    original = make(make_params())
    run(original, range(3))
    saved = original.state_dict()

    midway = [p.numpy().copy() for p in original.params]
    restored = make(make_params(midway))
    restored.load_state_dict(saved)
    assert restored.step_count == 3
    assert restored.lr == original.lr
    expected = run(original, range(3, 6))
    for got, want in zip(run(restored, range(3, 6)), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    # Without the state (momentum, moments, clock) the same steps would differ.
    fresh = make(make_params(midway))
    assert not np.array_equal(run(fresh, range(3, 6))[0], expected[0])


def test_state_dict_is_plain_host_data_and_a_copy():
    optimizer = FACTORIES["rmsprop_centered_momentum"](make_params())
    run(optimizer, range(2))
    saved = optimizer.state_dict()
    assert is_plain(saved)
    assert saved["kind"] == "rmsprop"
    assert saved["step_count"] == 2
    assert saved["param_shapes"] == [[2, 3], [3]]
    assert sorted(saved["state"]) == [0, 1]
    assert sorted(saved["state"][0]) == ["grad_avg", "momentum_buffer", "square_avg"]
    assert saved["hyperparameters"]["momentum"] == 0.9

    saved["state"][0]["square_avg"][...] = 99.0
    assert not np.any(optimizer.state[0]["square_avg"].numpy() == 99.0)
    optimizer.load_state_dict(saved)
    saved["state"][0]["square_avg"][...] = -1.0
    np.testing.assert_array_equal(optimizer.state[0]["square_avg"].numpy(), 99.0)


def test_state_dict_loads_after_a_json_round_trip():
    original = FACTORIES["adamw"](make_params())
    run(original, range(2))
    saved = original.state_dict()
    as_json = json.loads(
        json.dumps(saved, default=lambda a: a.tolist())  # int keys become strings
    )
    restored = FACTORIES["adamw"](make_params([p.numpy().copy() for p in original.params]))
    restored.load_state_dict(as_json)
    np.testing.assert_array_equal(run(restored, range(2, 4))[0], run(original, range(2, 4))[0])


def test_loaded_state_takes_the_parameter_dtype():
    params = [Tensor(np.zeros(3, np.float32), requires_grad=True)]
    optimizer = Adam(params)
    optimizer.load_state_dict(
        {
            "kind": "adam",
            "step_count": 4,
            "param_shapes": [[3]],
            "state": {0: {"exp_avg": np.ones(3), "exp_avg_sq": np.ones(3)}},
        }
    )
    assert optimizer.state[0]["exp_avg"].dtype == np.float32
    assert optimizer.step_count == 4


def adam_state(**changes):
    optimizer = Adam(make_params())
    run(optimizer, range(1))
    saved = optimizer.state_dict()
    saved.update(changes)
    return saved


@pytest.mark.parametrize(
    ("make_target", "saved", "message"),
    [
        (lambda ps: SGD(ps, lr=0.1), adam_state(), "for optimizer 'adam', this optimizer is 'sgd'"),
        (lambda ps: Adam(ps[:1]), adam_state(), "is for 2 parameters, this optimizer has 1"),
        (
            lambda ps: Adam([ps[0], Tensor(np.zeros(4), requires_grad=True)]),
            adam_state(),
            "parameter 1 has shape (4,), the state dict has (3,)",
        ),
        (Adam, {"kind": "adam"}, "has no step_count, param_shapes, state"),
        (Adam, [1, 2], "a state dict is a mapping"),
        (Adam, adam_state(step_count=-1), "step_count must be an integer >= 0, got -1"),
        (Adam, adam_state(step_count=1.5), "step_count must be an integer >= 0, got 1.5"),
        (Adam, adam_state(state={7: {}}), "state key 7 is not a parameter index in [0, 2)"),
        (Adam, adam_state(state={0: {"exp_avg": np.zeros((2, 3))}}), "has state ['exp_avg']"),
        (
            Adam,
            adam_state(state={0: {"exp_avg": np.zeros(6), "exp_avg_sq": np.zeros(6)}}),
            "state 'exp_avg' of parameter 0 has shape (6,), the parameter has (2, 3)",
        ),
    ],
)
def test_mismatched_state_dicts_are_rejected(make_target, saved, message):
    target = make_target(make_params())
    with pytest.raises(StateDictError) as error:
        target.load_state_dict(saved)
    assert message in str(error.value)


def test_changed_settings_are_named_and_a_failed_load_changes_nothing():
    with_momentum = SGD(make_params(), lr=0.1, momentum=0.9)
    run(with_momentum, range(2))
    plain = SGD(make_params(), lr=0.1)
    run(plain, range(1))
    with pytest.raises(StateDictError, match="were its settings changed"):
        plain.load_state_dict(with_momentum.state_dict())
    assert plain.step_count == 1
    assert plain.state == {0: {}, 1: {}}
