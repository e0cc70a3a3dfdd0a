"""Bad hyperparameters, parameter lists and gradients give an OptimizerError naming the problem."""

import math

import numpy as np
import pytest

from trainctl.autograd import Tensor
from trainctl.errors import OptimizerError, TrainctlError
from trainctl.optim import SGD, Adam, AdamW, ConstantLR, RMSprop, make_optimizer


def params():
    return [Tensor(np.zeros(3), requires_grad=True), Tensor(np.zeros(2), requires_grad=True)]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda ps: SGD(ps), "SGD needs a learning rate: pass lr="),
        (lambda ps: SGD(ps, lr=-0.1), "SGD: lr must be in [0, inf), got -0.1"),
        (lambda ps: SGD(ps, lr=math.nan), "SGD: lr must be in [0, inf), got nan"),
        (lambda ps: SGD(ps, lr="0.1"), "SGD: lr must be a number in [0, inf), got '0.1'"),
        (lambda ps: SGD(ps, lr=True), "lr must be a number"),
        (lambda ps: SGD(ps, lr=0.1, momentum=-0.5), "SGD: momentum must be in [0, 1), got -0.5"),
        (lambda ps: SGD(ps, lr=0.1, momentum=1.0), "momentum must be in [0, 1), got 1.0"),
        (lambda ps: SGD(ps, lr=0.1, dampening=1.5), "dampening must be in [0, 1], got 1.5"),
        (lambda ps: SGD(ps, lr=0.1, weight_decay=-1), "weight_decay must be in [0, inf), got -1"),
        (lambda ps: SGD(ps, lr=0.1, nesterov=True), "nesterov=True needs momentum in (0, 1)"),
        (
            lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, dampening=0.1),
            "and dampening = 0, got momentum=0.9, dampening=0.1",
        ),
        (lambda ps: SGD(ps, lr=0.1, nesterov="yes"), "nesterov must be true or false, got 'yes'"),
        (lambda ps: Adam(ps, betas=(1.0, 0.999)), "Adam: betas[0] must be in [0, 1), got 1.0"),
        (lambda ps: Adam(ps, betas=(0.9, -0.1)), "Adam: betas[1] must be in [0, 1), got -0.1"),
        (lambda ps: Adam(ps, betas=(0.9,)), "betas must be a pair (beta1, beta2), got (0.9,)"),
        (lambda ps: Adam(ps, betas=0.9), "betas must be a pair"),
        (lambda ps: Adam(ps, eps=-1e-8), "Adam: eps must be in [0, inf), got -1e-08"),
        (lambda ps: Adam(ps, lr=-1), "Adam: lr must be in [0, inf), got -1"),
        (lambda ps: AdamW(ps, weight_decay=-0.01), "AdamW: weight_decay must be in [0, inf)"),
        (lambda ps: RMSprop(ps, alpha=1.0), "RMSprop: alpha must be in [0, 1), got 1.0"),
        (lambda ps: RMSprop(ps, momentum=2), "RMSprop: momentum must be in [0, 1), got 2"),
        (lambda ps: RMSprop(ps, centered=1), "centered must be true or false, got 1"),
        (
            lambda ps: SGD(ps, lr=0.2, schedule=ConstantLR(0.1)),
            "lr=0.2 disagrees with the schedule's base_lr=0.1",
        ),
        (lambda ps: SGD(ps, schedule=0.1), "schedule must be a Schedule (see make_schedule)"),
        (lambda ps: SGD([], lr=0.1), "SGD: got an empty parameter list"),
        (lambda ps: SGD(ps[0], lr=0.1), "params must be an iterable of tensors"),
        (lambda ps: SGD([ps[0], np.zeros(2)], lr=0.1), "parameter 1 is a ndarray, not a Tensor"),
        (
            lambda ps: SGD([ps[0], Tensor(np.zeros(2))], lr=0.1),
            "parameter 1 does not require grad",
        ),
        (
            lambda ps: SGD([ps[0], ps[1], ps[0]], lr=0.1),
            "parameter 2 is the same tensor as parameter 0",
        ),
    ],
)
def test_bad_settings_are_rejected_with_a_clear_message(make, message):
    with pytest.raises(OptimizerError) as error:
        make(params())
    assert message in str(error.value)
    assert isinstance(error.value, TrainctlError)


@pytest.mark.parametrize(
    ("grad", "message"),
    [
        (Tensor(np.zeros(3)), "parameter 1 is float64[2] but its grad is float64[3]"),
        (Tensor(np.zeros(2, np.float32)), "parameter 1 is float64[2] but its grad is float32[2]"),
        (np.zeros(2), "the grad of parameter 1 is a ndarray, not a Tensor"),
    ],
)
def test_a_bad_gradient_is_rejected_before_anything_is_updated(grad, message):
    ps = params()
    optimizer = SGD(ps, lr=0.1, momentum=0.9)
    ps[0].grad = Tensor(np.ones(3))
    ps[1].grad = grad
    with pytest.raises(OptimizerError) as error:
        optimizer.step()
    assert message in str(error.value)
    np.testing.assert_array_equal(ps[0].numpy(), np.zeros(3))
    assert optimizer.state == {}
    assert optimizer.step_count == 0


def test_make_optimizer_builds_by_name_and_rejects_unknown_names():
    optimizer = make_optimizer("sgd", params(), lr=0.1, momentum=0.9, nesterov=True)
    assert isinstance(optimizer, SGD)
    assert (optimizer.momentum, optimizer.nesterov) == (0.9, True)
    assert isinstance(make_optimizer("adamw", params(), betas=[0.8, 0.9]), AdamW)
    with pytest.raises(OptimizerError, match="unknown optimizer 'adamm' \\(did you mean 'adam'\\?"):
        make_optimizer("adamm", params())
    with pytest.raises(OptimizerError, match="expected one of adam, adamw, rmsprop, sgd"):
        make_optimizer("lbfgs", params())
    with pytest.raises(OptimizerError, match="unknown argument 'momentun' \\(did you mean"):
        make_optimizer("sgd", params(), lr=0.1, momentun=0.9)
