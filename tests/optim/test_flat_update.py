"""The eager update over flat storage (`optim/flat.py`) against one update per parameter.

The reference applies `update_rule` to each parameter alone, as `step()` did before the flat
storage: the flat update must give the same bits for every optimizer, for parameters of two
dtypes and of every rank, when a parameter has no gradient on some steps, and when a parameter,
its data in place, or the optimizer's state is changed between steps.
"""

import numpy as np
import pytest

from trainctl.autograd import Tensor
from trainctl.optim import SGD, Adam, AdamW, RMSprop

SHAPES = [((3, 4), np.float32), ((4,), np.float32), ((), np.float64), ((2, 3, 2), np.float64)]
SHAPES += [((5,), np.float32)]

OPTIMIZERS = {
    "sgd": lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "sgd-dampened": lambda ps: SGD(ps, lr=0.1, momentum=0.5, dampening=0.3),
    "sgd-plain": lambda ps: SGD(ps, lr=0.05),
    "adam": lambda ps: Adam(ps, lr=0.01, weight_decay=0.1),
    "adamw": lambda ps: AdamW(ps, lr=0.01),
    "rmsprop": lambda ps: RMSprop(ps, lr=0.01, momentum=0.9, centered=True, weight_decay=0.1),
}


def make_params(seed):
    rng = np.random.default_rng(seed)
    return [
        Tensor(rng.standard_normal(shape).astype(dtype), requires_grad=True)
        for shape, dtype in SHAPES
    ]


def reference_step(opt):
    """One update per parameter with a gradient: `step()` before the flat storage."""
    scalars = opt.step_scalars()
    for index, param in enumerate(opt.params):
        if param.grad is None:
            continue
        state = opt.state[index] if index in opt.state else opt.init_state(param)
        new_param, opt.state[index] = opt.update_rule(param, param.grad, state, **scalars)
        param.data = new_param.data
    opt.step_count += 1


def set_grads(params, step, skip=()):
    rng = np.random.default_rng(100 + step)
    for index, p in enumerate(params):
        grad = rng.standard_normal(p.shape).astype(p.dtype)
        p.grad = None if index in skip else Tensor(grad)


def assert_same_bits(flat_opt, reference_opt):
    for a, b in zip(flat_opt.params, reference_opt.params, strict=True):
        assert a.data.dtype == b.data.dtype
        np.testing.assert_array_equal(a.data, b.data, strict=True)
    assert sorted(flat_opt.state) == sorted(reference_opt.state)
    for index, entry in reference_opt.state.items():
        for name, value in entry.items():
            np.testing.assert_array_equal(flat_opt.state[index][name].data, value.data)


def run_both(kind, steps, between=None, skips=None):
    flat_params, reference_params = make_params(0), make_params(0)
    flat_opt, reference_opt = OPTIMIZERS[kind](flat_params), OPTIMIZERS[kind](reference_params)
    for step in range(steps):
        skip = (skips or {}).get(step, ())
        set_grads(flat_params, step, skip)
        set_grads(reference_params, step, skip)
        flat_opt.step()
        reference_step(reference_opt)
        assert_same_bits(flat_opt, reference_opt)
        if between is not None:
            between(step, flat_opt)
            between(step, reference_opt)
    return flat_opt


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_the_flat_update_has_the_bits_of_one_update_per_parameter(kind):
    run_both(kind, steps=4)


@pytest.mark.parametrize("kind", ["sgd", "adam", "rmsprop"])
def test_a_parameter_without_a_gradient_is_skipped_as_before(kind):
    # parameter 1 has no gradient on step 1, parameter 2 (the float64 scalar) on steps 1-2
    opt = run_both(kind, steps=5, skips={1: (1, 2), 2: (2,)})
    assert len(opt._flat_groups) == 2  # one per dtype, whatever sets of parameters came before


def test_parameters_of_one_dtype_become_views_of_one_flat_array_updated_in_one_call():
    params = make_params(0)
    opt = OPTIMIZERS["adam"](params)
    calls = []
    rule = opt.update_rule
    opt.update_rule = lambda *args, **kwargs: calls.append(args[0].shape) or rule(*args, **kwargs)
    for step in range(2):
        set_grads(params, step)
        opt.step()
    float32 = [p for p in params if p.dtype == np.float32]
    assert len({id(p.data.base) for p in float32}) == 1 and float32[0].data.base is not None
    assert calls == [(12 + 4 + 5,), (1 + 12,)] * 2  # one call per dtype and step
    exp_avg = [opt.state[i]["exp_avg"].data for i in (0, 1, 4)]
    assert all(a.base is exp_avg[0].base for a in exp_avg)


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_changes_between_steps_are_taken_in(kind):
    rng = np.random.default_rng(7)
    replacement = {i: rng.standard_normal(shape).astype(dtype) for i, (shape, dtype) in
                   enumerate(SHAPES)}  # fmt: skip

    def between(step, opt):
        if step == 0:  # a parameter rebound (a checkpoint load, graph mode taking over)
            opt.params[0].data = replacement[0].copy()
        elif step == 1:  # a parameter changed in place, through its view
            opt.params[4].data[...] = replacement[4]
        elif step == 2:  # the whole state reloaded
            opt.load_state_dict(opt.state_dict())
            first = sorted(opt.state)[0]
            for value in opt.state[first].values():
                value.data = value.data + 1.0

    run_both(kind, steps=5, between=between)
