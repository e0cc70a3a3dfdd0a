"""The first three updates of every optimizer against its formula, written out in NumPy float64.

Gradients are set on `param.grad` by hand (a different one each step), so nothing here depends
on the layers or on backward().
"""

import numpy as np
import pytest

from trainctl.autograd import Tensor
from trainctl.autograd.ops import Operand
from trainctl.optim import SGD, Adam, AdamW, RMSprop

P0 = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
GRADS = [
    np.array([[0.1, -0.2, 0.3], [0.4, -0.5, 0.6]]),
    np.array([[-0.3, 0.1, 0.2], [0.0, 0.7, -0.4]]),
    np.array([[0.25, 0.5, -0.1], [-0.6, 0.2, 0.05]]),
]


def sgd_reference(lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    p, buf, out = P0.copy(), None, []
    for g in GRADS:
        g = g + weight_decay * p
        if momentum:
            buf = g if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
        out.append(p)
    return out


def adam_reference(lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False):
    p, m, v, out = P0.copy(), np.zeros_like(P0), np.zeros_like(P0), []
    for t, g in enumerate(GRADS, start=1):
        if decoupled:
            p = p - lr * weight_decay * p
        else:
            g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(p)
    return out


def rmsprop_reference(lr, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0, centered=False):
    p, out = P0.copy(), []
    square_avg, grad_avg, buf = np.zeros_like(P0), np.zeros_like(P0), np.zeros_like(P0)
    for g in GRADS:
        g = g + weight_decay * p
        square_avg = alpha * square_avg + (1 - alpha) * g**2
        if centered:
            grad_avg = alpha * grad_avg + (1 - alpha) * g
            avg = np.sqrt(square_avg - grad_avg**2) + eps
        else:
            avg = np.sqrt(square_avg) + eps
        if momentum:
            buf = momentum * buf + g / avg
            p = p - lr * buf
        else:
            p = p - lr * g / avg
        out.append(p)
    return out


CASES = {
    "sgd": (lambda ps: SGD(ps, lr=0.1), lambda: sgd_reference(0.1)),
    "sgd_momentum": (
        lambda ps: SGD(ps, lr=0.1, momentum=0.9),
        lambda: sgd_reference(0.1, momentum=0.9),
    ),
    "sgd_momentum_dampening": (
        lambda ps: SGD(ps, lr=0.1, momentum=0.9, dampening=0.5),
        lambda: sgd_reference(0.1, momentum=0.9, dampening=0.5),
    ),
    "sgd_nesterov": (
        lambda ps: SGD(ps, lr=0.1, momentum=0.8, nesterov=True),
        lambda: sgd_reference(0.1, momentum=0.8, nesterov=True),
    ),
    "sgd_weight_decay": (
        lambda ps: SGD(ps, lr=0.1, weight_decay=0.05),
        lambda: sgd_reference(0.1, weight_decay=0.05),
    ),
    "sgd_momentum_weight_decay": (
        lambda ps: SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.05),
        lambda: sgd_reference(0.1, momentum=0.9, weight_decay=0.05),
    ),
    "adam": (lambda ps: Adam(ps, lr=0.01), lambda: adam_reference(0.01)),
    "adam_betas_eps": (
        lambda ps: Adam(ps, lr=0.05, betas=(0.8, 0.9), eps=1e-3),
        lambda: adam_reference(0.05, beta1=0.8, beta2=0.9, eps=1e-3),
    ),
    "adam_weight_decay": (
        lambda ps: Adam(ps, lr=0.01, weight_decay=0.1),
        lambda: adam_reference(0.01, weight_decay=0.1),
    ),
    "adamw": (
        lambda ps: AdamW(ps, lr=0.01, weight_decay=0.1),
        lambda: adam_reference(0.01, weight_decay=0.1, decoupled=True),
    ),
    "rmsprop": (lambda ps: RMSprop(ps, lr=0.01), lambda: rmsprop_reference(0.01)),
    "rmsprop_momentum": (
        lambda ps: RMSprop(ps, lr=0.01, momentum=0.9),
        lambda: rmsprop_reference(0.01, momentum=0.9),
    ),
    "rmsprop_centered": (
        lambda ps: RMSprop(ps, lr=0.01, alpha=0.9, centered=True),
        lambda: rmsprop_reference(0.01, alpha=0.9, centered=True),
    ),
    "rmsprop_centered_momentum_weight_decay": (
        lambda ps: RMSprop(ps, lr=0.01, eps=1e-4, momentum=0.5, weight_decay=0.1, centered=True),
        lambda: rmsprop_reference(0.01, eps=1e-4, momentum=0.5, weight_decay=0.1, centered=True),
    ),
}


def run_three_steps(make_optimizer, device="cpu"):
    param = Tensor(P0.copy(), device=device, requires_grad=True)
    optimizer = make_optimizer([param])
    values = []
    for g in GRADS:
        param.grad = Tensor(g.copy(), device=device)
        optimizer.step()
        assert optimizer.params[0] is param
        values.append(param.numpy().copy())
    return optimizer, values


@pytest.mark.parametrize("name", CASES)
def test_first_three_steps_match_the_formula(name):
    make_optimizer, reference = CASES[name]
    optimizer, values = run_three_steps(make_optimizer)
    assert optimizer.step_count == 3
    for step, (got, expected) in enumerate(zip(values, reference(), strict=True), start=1):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15, err_msg=f"step {step}")


@pytest.mark.parametrize("name", ["sgd_momentum_dampening", "adamw", "rmsprop_centered"])
def test_updates_agree_across_devices(name, device):
    make_optimizer, _ = CASES[name]
    _, on_device = run_three_steps(make_optimizer, device)
    _, on_cpu = run_three_steps(make_optimizer)
    np.testing.assert_allclose(on_device[-1], on_cpu[-1], rtol=1e-12)


def test_first_momentum_step_uses_the_gradient_undampened():
    # PyTorch's buffer starts as the gradient itself; (1 - dampening) applies from step 2 on.
    param = Tensor(np.zeros(2), requires_grad=True)
    optimizer = SGD([param], lr=1.0, momentum=0.5, dampening=0.75)
    assert optimizer.step_scalars()["grad_factor"] == 1.0
    param.grad = Tensor(np.array([1.0, -2.0]))
    optimizer.step()
    np.testing.assert_array_equal(optimizer.state[0]["momentum_buffer"].numpy(), [1.0, -2.0])
    assert optimizer.step_scalars()["grad_factor"] == 0.25
    optimizer.step()
    np.testing.assert_array_equal(optimizer.state[0]["momentum_buffer"].numpy(), [0.75, -1.5])
    np.testing.assert_array_equal(param.numpy(), [-1.75, 3.5])


def test_step_skips_parameters_without_a_gradient():
    used = Tensor(np.ones(3), requires_grad=True)
    unused = Tensor(np.ones(2), requires_grad=True)
    optimizer = Adam([used, unused], lr=0.1)
    used.grad = Tensor(np.full(3, 0.5))
    optimizer.step()
    np.testing.assert_array_equal(unused.numpy(), np.ones(2))
    np.testing.assert_allclose(used.numpy(), np.full(3, 0.9))
    assert sorted(optimizer.state) == [0]
    assert optimizer.step_count == 1


def test_zero_grad_clears_every_gradient():
    params = [Tensor(np.ones(2), requires_grad=True) for _ in range(2)]
    optimizer = SGD(params, lr=0.1)
    for param in params:
        param.grad = Tensor(np.ones(2))
    optimizer.zero_grad()
    assert all(param.grad is None for param in params)


@pytest.mark.parametrize("name", CASES)
def test_float32_parameters_stay_float32(name):
    # NumPy scalars are strongly typed in NumPy 2: a float64 hyperparameter or step scalar that
    # reached the rule unconverted would promote the parameter and its state to float64.
    make_optimizer, _ = CASES[name]
    param = Tensor(P0.astype(np.float32), requires_grad=True)
    optimizer = make_optimizer([param])
    for attr in ("momentum", "weight_decay", "eps", "alpha", "beta1"):
        if hasattr(optimizer, attr):
            assert type(getattr(optimizer, attr)) is float
    for g in GRADS:
        param.grad = Tensor(g.astype(np.float32))
        optimizer.step()
    assert param.dtype == np.float32
    assert all(t.dtype == np.float32 for t in optimizer.state[0].values())


def test_numpy_scalar_hyperparameters_are_stored_as_python_floats():
    param = Tensor(np.ones(2, np.float32), requires_grad=True)
    optimizer = Adam([param], lr=np.float64(0.1), betas=(np.float64(0.9), np.float32(0.99)))
    param.grad = Tensor(np.ones(2, np.float32))
    optimizer.step()
    assert param.dtype == np.float32
    assert all(type(value) is float for value in optimizer.step_scalars().values())


@pytest.mark.parametrize("name", CASES)
def test_step_scalars_and_update_rule_mutate_nothing(name):
    make_optimizer, _ = CASES[name]
    optimizer, _ = run_three_steps(make_optimizer)
    param = optimizer.params[0]
    before = param.numpy().copy()
    state_before = {k: v.numpy().copy() for k, v in optimizer.state[0].items()}
    scalars = optimizer.step_scalars()
    assert optimizer.step_scalars() == scalars
    new_param, new_state = optimizer.update_rule(
        param, Tensor(GRADS[0]), optimizer.state[0], **scalars
    )
    assert not np.array_equal(new_param.numpy(), before)
    np.testing.assert_array_equal(param.numpy(), before)
    assert sorted(new_state) == sorted(optimizer.state_names)
    for key, value in optimizer.state[0].items():
        np.testing.assert_array_equal(value.numpy(), state_before[key])
    assert optimizer.step_count == 3


def test_adam_step_scalars_are_the_bias_corrections_of_the_next_step():
    param = Tensor(np.ones(2), requires_grad=True)
    optimizer = Adam([param], lr=0.1, betas=(0.5, 0.75))
    assert optimizer.step_scalars() == {
        "lr": 0.1,
        "bias_correction1": 0.5,
        "bias_correction2": 0.25,
    }
    param.grad = Tensor(np.ones(2))
    optimizer.step()
    assert optimizer.step_scalars()["bias_correction1"] == 0.75
    assert optimizer.step_scalars()["bias_correction2"] == 1 - 0.75**2


class Symbol(Operand):
    """A stand-in for a graph value: shape and dtype only, every op recorded on a shared tape.

    It has no `.data` and no truth value, so a rule that did NumPy math or branched on a value
    fails here.
    """

    __slots__ = ("shape", "dtype", "tape")

    def __init__(self, shape, dtype, tape):
        self.shape, self.dtype, self.tape = tuple(shape), np.dtype(dtype), tape

    def _apply(self, op, inputs, attrs):
        self.tape.append(op.name)
        spec = op.infer(*inputs, **attrs)
        return Symbol(spec.shape, spec.dtype, self.tape)

    def __bool__(self):
        raise TypeError("a symbolic value has no truth value")


def trace_rule(optimizer, shape=(2, 3), dtype=np.float32):
    tape = []
    state = {name: Symbol(shape, dtype, tape) for name in optimizer.state_names}
    scalars = {name: Symbol((), dtype, tape) for name in optimizer.step_scalars()}
    new_param, new_state = optimizer.update_rule(
        Symbol(shape, dtype, tape), Symbol(shape, dtype, tape), state, **scalars
    )
    return new_param, new_state, tape


@pytest.mark.parametrize("name", CASES)
def test_update_rule_traces_on_symbolic_values(name):
    make_optimizer, _ = CASES[name]
    optimizer = make_optimizer([Tensor(P0.astype(np.float32), requires_grad=True)])
    new_param, new_state, tape = trace_rule(optimizer)
    assert isinstance(new_param, Symbol)
    assert (new_param.shape, new_param.dtype) == ((2, 3), np.float32)
    assert sorted(new_state) == sorted(optimizer.state_names)
    assert all((s.shape, s.dtype) == ((2, 3), np.float32) for s in new_state.values())
    assert "sub" in tape
    # One trace serves every step: the traced ops do not depend on the step count.
    trained, _ = run_three_steps(make_optimizer)
    assert trace_rule(trained)[2] == tape
