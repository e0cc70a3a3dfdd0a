"""Forward values against plain NumPy oracles (naive loops where the op is clever)."""

import numpy as np
import pytest
from autograd_cases import FORWARD_CASES, GRAD_CASES, IM2COL_CONFIGS, Case

from trainctl.autograd import ops, tensor

REFERENCE_CASES = [
    case
    for table in (GRAD_CASES, FORWARD_CASES)
    for cases in table.values()
    for case in cases
    if case.ref is not None
]
TOLERANCE = {np.float32: 2e-6, np.float64: 1e-12}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", REFERENCE_CASES, ids=lambda c: c.id)
def test_forward_matches_numpy_reference(case: Case, dtype, device):
    arrays = [a.astype(dtype) if np.issubdtype(a.dtype, np.floating) else a for a in case.arrays()]
    out = case.fn(*(tensor(a, device=device) for a in arrays))
    expected = case.ref(*(a.astype(np.float64) if a.dtype == dtype else a for a in arrays))
    assert out.shape == np.shape(expected)
    if out.dtype == np.bool_:
        np.testing.assert_array_equal(out.numpy(), expected)
    else:
        if any(a.dtype == dtype for a in arrays):  # one_hot's dtype is its own argument
            assert out.dtype == dtype
        np.testing.assert_allclose(out.numpy(), expected, rtol=TOLERANCE[dtype], atol=1e-6)


def test_reference_table_covers_the_key_ops():
    covered = {case.op for case in REFERENCE_CASES}
    wanted = {"conv", "max_pool2d", "max_pool2d_grad", "softmax_cross_entropy", "softmax"}
    assert wanted <= covered


@pytest.mark.parametrize("config", IM2COL_CONFIGS, ids=str)
def test_col2im_is_the_adjoint_of_im2col(config, device):
    # <im2col(x), c> == <x, col2im(c)> for all x, c: col2im sums overlapping windows.
    shape, kh, kw, stride, padding = IM2COL_CONFIGS[config]
    rng = np.random.default_rng(0)
    x = tensor(rng.standard_normal(shape), device=device)
    cols = ops.im2col(x, kh, kw, stride, padding)
    c = tensor(rng.standard_normal(cols.shape), device=device)
    back = ops.col2im(c, shape, kh, kw, stride, padding)
    assert back.shape == shape
    lhs = float((cols.numpy() * c.numpy()).sum())
    rhs = float((x.numpy() * back.numpy()).sum())
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_im2col_patches_are_the_windows(device):
    x = np.arange(2 * 4 * 5 * 3, dtype=np.float64).reshape(2, 4, 5, 3)
    cols = ops.im2col(tensor(x, device=device), 3, 2, 2, 1).numpy()
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    assert cols.shape == (2, 2, 3, 3, 2, 3)
    for i in range(2):
        for j in range(3):
            np.testing.assert_array_equal(
                cols[:, i, j], padded[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 2, :]
            )


def test_scatter_add_rows_adds_repeated_indices(device):
    x = np.arange(12.0).reshape(4, 3)
    indices = np.array([2, 0, 2, 2])
    out = ops.scatter_add_rows(tensor(x, device=device), tensor(indices, device=device), 4)
    expected = np.zeros((4, 3))
    for row, index in zip(x, indices, strict=True):
        expected[index] += row
    np.testing.assert_array_equal(out.numpy(), expected)


def test_unslice_writes_into_zeros(device):
    x = np.arange(1.0, 7.0).reshape(3, 2)
    index = (slice(None, None, -1), slice(3, 0, -2))
    out = ops.unslice(tensor(x, device=device), (3, 4), index).numpy()
    expected = np.zeros((3, 4))
    expected[index] = x
    np.testing.assert_array_equal(out, expected)
    assert out.sum() == x.sum()


def test_dropout_is_deterministic_per_key(device):
    x = tensor(np.ones((50, 40), np.float32), device=device)
    first = ops.dropout(x, 0.3, (5, 1)).numpy()
    assert np.array_equal(first, ops.dropout(x, 0.3, (5, 1)).numpy())
    assert not np.array_equal(first, ops.dropout(x, 0.3, (5, 2)).numpy())
    assert set(np.unique(first)) == {0.0, np.float32(1 / 0.7)}
    assert abs((first == 0).mean() - 0.3) < 0.05
    np.testing.assert_array_equal(ops.dropout(x, 0.0, (5, 1)).numpy(), x.numpy())


def test_mean_divides_by_the_reduced_count(device):
    x = tensor(np.arange(24.0).reshape(2, 3, 4), device=device)
    np.testing.assert_allclose(ops.mean(x, (0, 2)).numpy(), x.numpy().mean(axis=(0, 2)))
    assert ops.mean(x, 1, keepdims=True).shape == (2, 1, 4)
