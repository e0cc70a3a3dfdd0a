"""The eager Tensor and its tape: accumulation, no_grad, detach, backward's contract,
operators, dtypes and errors."""

import numpy as np
import pytest

from trainctl.autograd import Tensor, is_grad_enabled, no_grad, ones, ops, tensor, zeros
from trainctl.autograd.tensor import AutogradError, tape_inputs, topological_order
from trainctl.backend import Device, get_device
from trainctl.errors import DeviceError, TrainctlError


def leaf(values, device="cpu", dtype=np.float64) -> Tensor:
    return tensor(np.asarray(values, dtype), device=device, requires_grad=True)


# ---------------------------------------------------------------- accumulation


def test_tensor_used_twice_accumulates(device):
    x = leaf([1.0, -2.0, 3.0], device)
    (x * x + 3.0 * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() + 3)


def test_intermediate_used_by_two_consumers(device):
    x = leaf([0.5, 1.5], device)
    h = x.exp()  # reached through both branches before its own vjp runs
    (h * 2.0 + h.sum()).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.exp(x.numpy()) * (2 + 2))


def test_each_node_is_visited_once(device):
    # h * h pushes h twice before it is expanded; walking it twice would double the work at
    # every level of a graph like this (2**depth).
    x = leaf([0.5, 1.5], device)
    h = x.exp()
    y = h * h
    assert [t is h for t in topological_order(y, tape_inputs)] == [True, False]
    for _ in range(60):
        y = (y + y) * 0.5
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.exp(2 * x.numpy()))


def test_backward_calls_accumulate_on_leaves(device):
    x = leaf([1.0, 2.0], device)
    (x * 3.0).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 + 2 * x.numpy())


def test_leaf_gradients_are_owned_and_writable(device):
    # a + b hands both leaves the same vjp result, and sum() a read-only broadcast view;
    # optimizers may update .grad in place, so each leaf must own its gradient.
    a, b = leaf([1.0, 2.0], device), leaf([3.0, 4.0], device)
    upstream = np.array([1.0, 1.0])
    (a + b).backward(upstream)
    assert a.grad is not b.grad
    a.grad.data[0] = 5.0
    assert b.grad.numpy()[0] == 1.0 and upstream[0] == 1.0
    c = leaf([1.0, 2.0], device)
    c.sum().backward()
    c.grad.data += 1.0
    np.testing.assert_array_equal(c.grad.numpy(), [2.0, 2.0])


def test_backward_on_a_leaf(device):
    x = leaf(3.0, device)
    x.backward()
    x.backward()
    assert x.grad.item() == 2.0


# ---------------------------------------------------------------- recording


def test_no_grad_stops_recording_and_restores():
    x = leaf([1.0, 2.0])
    assert is_grad_enabled()
    with no_grad():
        assert not is_grad_enabled()
        y = x * 2.0
        with no_grad():
            pass
        assert not is_grad_enabled()
    assert is_grad_enabled()
    assert not y.requires_grad and y._ctx is None
    with pytest.raises(AutogradError, match="does not require grad"):
        y.sum().backward()
    with pytest.raises(RuntimeError), no_grad():
        raise RuntimeError
    assert is_grad_enabled()


def test_detach_shares_data_and_cuts_the_tape(device):
    x = leaf([1.0, 2.0], device)
    d = x.detach()
    assert not d.requires_grad and d._ctx is None
    assert np.shares_memory(d.numpy(), x.numpy()) or device.name != "cpu"
    (d * x).sum().backward()  # d is a constant: the gradient is d, not 2x
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 2.0])


def test_requires_grad_propagates():
    a, c = leaf([1.0, 2.0]), tensor([3.0, 4.0])
    assert not c.requires_grad and not (c * 2.0).requires_grad
    assert (a * c).requires_grad and (c - a).requires_grad and ops.exp(a).requires_grad
    assert a._ctx is None and (a * c)._ctx is not None
    reflected = 1.0 <= a  # noqa: SIM300 - the reflected operator is what is tested
    for comparison in (a > c, a >= 1.0, a < 2.0, reflected, ops.equal(a, c)):
        assert comparison.dtype == np.bool_ and not comparison.requires_grad


# ---------------------------------------------------------------- backward's contract


def test_backward_with_explicit_gradient_for_non_scalar(device):
    x = leaf([[1.0, 2.0], [3.0, 4.0]], device)
    y = x * x
    upstream = np.array([[1.0, 0.0], [0.5, -1.0]])
    y.backward(upstream)
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() * upstream)
    x.grad = None
    (x * 3.0).backward(tensor(upstream, device=device))
    np.testing.assert_allclose(x.grad.numpy(), 3 * upstream)


def test_backward_errors():
    x = leaf([1.0, 2.0])
    with pytest.raises(AutogradError, match="single-value"):
        (x * 2.0).backward()
    with pytest.raises(AutogradError, match=r"gradient \(3,\) != tensor \(2,\)"):
        (x * 2.0).backward(np.ones(3))
    with pytest.raises(AutogradError, match="does not require grad"):
        tensor([1.0]).backward()
    assert issubclass(AutogradError, TrainctlError)


def test_second_backward_through_freed_graph_raises():
    x = leaf([1.0, 2.0])
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(AutogradError, match="retain_graph=True"):
        loss.backward()
    with pytest.raises(AutogradError, match="already freed"):
        (loss * 2.0).backward()  # a new graph that runs through the freed one


def test_retain_graph_allows_a_second_backward():
    x = leaf([1.0, 2.0])
    loss = (x * x).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), 4 * x.numpy())


def test_deep_chain_backpropagates_without_recursion(device):
    x = leaf(1.0, device)
    y = x
    for _ in range(5000):
        y = y * 1.0001 + 0.0
    y.backward()
    assert x.grad.item() == pytest.approx(1.0001**5000, rel=1e-9)


def test_gradient_skips_inputs_without_a_rule():
    # Indices cast from a tensor that requires grad: gather_rows has no rule for them, so the
    # gradient reaches the table and the path through the indices is skipped, not a crash.
    table = leaf(np.ones((3, 2)))
    where = leaf([0.2, 2.1])
    ops.gather_rows(table, where.astype(np.int64)).sum().backward()
    np.testing.assert_array_equal(table.grad.numpy(), [[1, 1], [0, 0], [1, 1]])
    assert where.grad is None


# ---------------------------------------------------------------- conversion


def test_item_numpy_and_conversions(device):
    x = tensor([[2.5]], device=device)
    assert x.item() == 2.5 and isinstance(x.item(), float)
    assert float(x) == 2.5 and bool(x)
    assert tensor(3, device=device).item() == 3 and isinstance(tensor(3).item(), int)
    values = tensor([1.0, 2.0], device=device).numpy()
    assert isinstance(values, np.ndarray) and values.tolist() == [1.0, 2.0]
    with pytest.raises(AutogradError, match="single value"):
        tensor([1.0, 2.0]).item()
    assert len(tensor(np.zeros((4, 2)))) == 4


def test_default_dtypes():
    assert tensor([1.0]).dtype == np.float32
    assert tensor(1.0).dtype == np.float32
    assert tensor([[1.0, 2.0]]).dtype == np.float32
    assert tensor([1, 2]).dtype == np.int64
    assert tensor([True]).dtype == np.bool_
    assert tensor(np.array([1.0])).dtype == np.float64  # arrays keep their dtype
    assert tensor([1.0], dtype=np.float64).dtype == np.float64
    assert zeros((2, 3)).dtype == ones((2,)).dtype == np.float32
    assert zeros((2, 3)).numpy().sum() == 0 and ones((2,)).numpy().sum() == 2


def test_to_same_device_is_identity():
    x = tensor([1.0])
    assert x.to("cpu") is x and x.device is get_device("cpu")


# ---------------------------------------------------------------- operators


def test_python_operators_values_and_gradients(device):
    x = leaf([1.0, 2.0, 4.0], device)
    w = leaf(np.arange(6.0).reshape(3, 2), device)
    results = {
        "2 + x": (2 + x, 2 + x.numpy(), np.ones(3)),
        "x + 2": (x + 2, x.numpy() + 2, np.ones(3)),
        "2 - x": (2 - x, 2 - x.numpy(), -np.ones(3)),
        "x - 2": (x - 2, x.numpy() - 2, np.ones(3)),
        "2 * x": (2 * x, 2 * x.numpy(), 2 * np.ones(3)),
        "2 / x": (2 / x, 2 / x.numpy(), -2 / x.numpy() ** 2),
        "x / 2": (x / 2, x.numpy() / 2, np.full(3, 0.5)),
        "x ** 3": (x**3, x.numpy() ** 3, 3 * x.numpy() ** 2),
        "-x": (-x, -x.numpy(), -np.ones(3)),
    }
    for name, (out, value, grad) in results.items():
        x.grad = None
        np.testing.assert_allclose(out.numpy(), value, err_msg=name)
        out.sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), grad, err_msg=name)
    x.grad = None
    row = x[None, :]
    (row @ w).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), w.numpy().sum(axis=1))
    np.testing.assert_allclose(w.grad.numpy(), np.repeat(x.numpy()[:, None], 2, axis=1))
    np.testing.assert_allclose((w.T @ w).numpy(), w.numpy().T @ w.numpy())


def test_comparisons_make_bool_tensors(device):
    x = leaf([1.0, 2.0, 3.0], device)
    cases = {
        "x > 2": (x > 2, [False, False, True]),
        "x >= 2": (x >= 2, [False, True, True]),
        "x < 2": (x < 2, [True, False, False]),
        "x <= 2": (x <= 2, [True, True, False]),
        "2 < x": (2 < x, [False, False, True]),  # noqa: SIM300 - reflected operators
        "2 >= x": (2 >= x, [True, True, False]),  # noqa: SIM300
    }
    for name, (out, expected) in cases.items():
        assert out.dtype == np.bool_ and not out.requires_grad, name
        assert out.numpy().tolist() == expected, name


def test_numpy_operands_on_the_left_defer_to_the_tensor():
    x = leaf([1.0, 2.0])
    for out in (np.float64(2.0) * x, np.float32(2.0) * x, np.ones(2) * 2.0 * x):
        assert isinstance(out, Tensor)
        np.testing.assert_allclose(out.numpy(), [2.0, 4.0])
    assert isinstance(np.ones(2) - x, Tensor) and isinstance(np.ones((3, 2)) @ x[:, None], Tensor)


def test_float32_stays_float32_with_python_scalars():
    x = tensor([1.0, 2.0])  # float32
    results = [
        x + 1.5,
        1.5 + x,
        x - 2,
        2 - x,
        x * 0.1,
        3 * x,
        x / 3.0,
        2 / x,
        x**2,
        x**0.5,
        -x,
        ops.maximum(x, 0.0),
        ops.where(x > 0, x, 0.0),
        ops.sigmoid(x),
        ops.relu(x),
        ops.mean(x),
        ops.dropout(x, 0.5, (0, 0)),
    ]
    assert [r.dtype for r in results] == [np.float32] * len(results)
    ints = tensor([1, 2])
    assert (ints + 1).dtype == np.int64 and (ints + 0.5).dtype == np.float64


def test_methods_match_functions():
    x = tensor(np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(x.reshape(3, 2).numpy(), x.numpy().reshape(3, 2))
    np.testing.assert_array_equal(x.reshape((6,)).numpy(), x.numpy().reshape(6))
    np.testing.assert_array_equal(x.transpose().numpy(), x.numpy().T)
    np.testing.assert_array_equal(x.transpose(1, 0).numpy(), x.numpy().T)
    np.testing.assert_array_equal(x.T.numpy(), x.numpy().T)
    assert x.sum().item() == 15 and x.max(axis=0).numpy().tolist() == [3, 4, 5]
    assert x.mean(axis=1, keepdims=True).shape == (2, 1)
    assert x.ndim == 2 and x.size == 6 and x.astype(np.float32).dtype == np.float32


# ---------------------------------------------------------------- errors


def test_mixed_devices_raise_device_error():
    other = Device("other", np)  # a second device object, so this runs without a GPU
    a, b = tensor([1.0, 2.0]), tensor([1.0, 2.0], device=other)
    with pytest.raises(DeviceError, match="add: operands on cpu and other"):
        a + b
    assert issubclass(DeviceError, TrainctlError)


@pytest.mark.gpu
def test_cpu_and_cuda_operands_raise_device_error():
    try:
        cuda = get_device("cuda")
    except DeviceError as exc:
        pytest.skip(str(exc))
    with pytest.raises(DeviceError, match="cpu and cuda"):
        tensor([1.0]) * tensor([1.0], device=cuda)
