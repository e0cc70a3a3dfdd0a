"""Every primitive's vjp against central finite differences in float64, on every device."""

import importlib
import pkgutil
import warnings

import numpy as np
import pytest
from autograd_cases import FORWARD_CASES, GRAD_CASES, Case
from gradcheck import gradcheck
from kinks import KINKS, Kink

import trainctl
from trainctl.autograd import Tensor, ops, tensor

TOLERANCE = 1e-6
CASES = [case for cases in GRAD_CASES.values() for case in cases]


def leaves(case: Case, device) -> list[Tensor]:
    return [tensor(a, np.float64, device, requires_grad=True) for a in case.arrays()]


def ops_in_graph(out: Tensor) -> set[str]:
    """Names of the primitives on the tape that produced `out`."""
    names, stack, seen = set(), [out], set()
    while stack:
        t = stack.pop()
        if id(t) in seen or not isinstance(t, Tensor) or t._ctx is None:
            continue
        seen.add(id(t))
        op, inputs, _ = t._ctx
        names.add(op.name)
        stack.extend(inputs)
    return names


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_gradient_matches_finite_differences(case: Case, device):
    xs = leaves(case, device)
    out = case.fn(*xs)
    if case.op in ops.REGISTRY:  # the case really exercises the primitive it is filed under
        assert case.op in ops_in_graph(out)
    assert gradcheck(lambda: case.fn(*xs), xs) < TOLERANCE


def _import_all_of_trainctl() -> None:
    """Ops defined anywhere in the package register themselves on import; a module whose
    third-party dependency is missing here (the CLI without typer) can register nothing."""
    for module in pkgutil.walk_packages(trainctl.__path__, "trainctl."):
        if module.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(module.name)
        except ModuleNotFoundError as exc:
            if (exc.name or "").startswith("trainctl"):
                raise


def uncovered(registry) -> dict[str, set[str]]:
    differentiable = {name for name, op in registry.items() if op.differentiable}
    forward_only = registry.keys() - differentiable
    return {
        "differentiable ops without a gradcheck": differentiable - GRAD_CASES.keys(),
        "non-differentiable ops without a forward test": forward_only - FORWARD_CASES.keys(),
        # a non-differentiable op cannot pass as covered by a gradient case
        "non-differentiable ops filed as gradient cases": forward_only & GRAD_CASES.keys(),
    }


def test_every_registered_op_is_covered():
    _import_all_of_trainctl()
    assert all(not names for names in uncovered(ops.REGISTRY).values()), uncovered(ops.REGISTRY)


def test_coverage_check_notices_a_new_op(monkeypatch):
    new_op = type("Erf", (), {"differentiable": True})
    monkeypatch.setitem(ops.REGISTRY, "erf", new_op)
    assert uncovered(ops.REGISTRY)["differentiable ops without a gradcheck"] == {"erf"}
    monkeypatch.setattr(new_op, "differentiable", False)
    assert uncovered(ops.REGISTRY)["non-differentiable ops without a forward test"] == {"erf"}


def test_non_differentiable_ops_record_nothing():
    x = tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    for out in (x > 1.0, x >= 1.0, ops.equal(x, 1.0)):
        assert out.dtype == np.bool_
        assert not out.requires_grad and out._ctx is None


@pytest.mark.parametrize("p, key", [(0.5, (3, 7)), (0.2, (0, 1))], ids=["p0.5", "p0.2"])
def test_dropout_gradient_is_the_forward_mask(p, key, device):
    x = tensor(np.ones((40, 50)), device=device, requires_grad=True)
    out = ops.dropout(x, p, key)
    out.sum().backward()
    kept = out.numpy() != 0
    assert 0.8 < kept.mean() / (1 - p) < 1.2
    np.testing.assert_allclose(x.grad.numpy(), kept / (1 - p))


def test_dropout_mask_ignores_the_gradient_dtype(device):
    # float32 activations meeting float64 tensors: the vjp must redraw the float32 mask.
    x = tensor(np.ones((20, 30), np.float32), device=device, requires_grad=True)
    out = ops.dropout(x, 0.5, (1, 2))
    (out * tensor(np.ones((20, 30)), device=device)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy() != 0, out.numpy() != 0)


def test_cast_gradient_comes_back_in_the_input_dtype(device):
    x = tensor(np.linspace(-1, 1, 6, dtype=np.float32), device=device, requires_grad=True)
    weights = np.arange(6.0) + 0.25
    (x.astype(np.float64) * tensor(weights, device=device)).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.numpy(), weights.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kink", KINKS, ids=lambda k: k.name)
def test_gradient_at_a_kink_is_the_analytic_value(kink: Kink, dtype, device):
    xs = [tensor(a, dtype, device, requires_grad=True) for a in kink.arrays(dtype)]
    kink.fn(*xs).sum().backward()
    for x, want in zip(xs, kink.expected(dtype), strict=True):
        assert x.grad.dtype == dtype
        np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "dtype, big", [(np.float64, 1000.0), (np.float32, 200.0)], ids=["f64", "f32"]
)
def test_sigmoid_is_stable_at_large_magnitudes(dtype, big, device):
    values = np.array([-big, -40.0, -20.0, 0.0, 20.0, 40.0, big], dtype)
    x = tensor(values, device=device, requires_grad=True)
    # Underflow to 0 is the right answer far out; overflow or NaN would not be.
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        out = ops.sigmoid(x)
        out.sum().backward()
    result, grad = out.numpy(), x.grad.numpy()
    assert out.dtype == dtype and np.isfinite(result).all() and np.isfinite(grad).all()
    assert result[0] == 0.0 and result[-1] == 1.0 and result[3] == 0.5
    with np.errstate(under="ignore"):  # sigmoid(x) = exp(-log(1 + exp(-x))), stably
        reference = np.exp(-np.logaddexp(0.0, -values.astype(np.float64)))
    np.testing.assert_allclose(result, reference, rtol=1e-6, atol=1e-30)
    # out * (1 - out) rounds to 0 once out rounds to 1 (as in PyTorch): exact up to an ulp.
    exact_grad = reference * (1 - reference)
    np.testing.assert_allclose(grad, exact_grad, rtol=1e-5, atol=np.finfo(dtype).eps)


def test_softmax_family_is_stable_for_huge_logits(device):
    logits = tensor([[1000.0, 0.0, -1000.0], [-500.0, -500.0, 500.0]], np.float64, device)
    labels = tensor([2, 0], device=device)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        probs = ops.softmax(logits, 1).numpy()
        log_probs = ops.log_softmax(logits, 1).numpy()
        loss = ops.softmax_cross_entropy(logits, labels, 0.1).numpy()
    np.testing.assert_allclose(probs, [[1, 0, 0], [0, 0, 1]], atol=1e-300)
    np.testing.assert_allclose(log_probs, [[0, -1000, -2000], [-1000, -1000, 0]])
    expected = [0.9 * 2000 + 0.1 * 3000 / 3, 0.9 * 1000 + 0.1 * 2000 / 3]
    np.testing.assert_allclose(loss, expected)
