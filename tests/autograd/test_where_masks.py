"""`where(cond, a, number)` as bit masks on large NumPy arrays: np.where's bits, edge values,
every dtype width, broadcast conditions, into out= and shared out over threads."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from trainctl.autograd import Tensor, ops
from trainctl.autograd.ops import elementwise
from trainctl.autograd.ops.elementwise import Where

EDGES = [0.0, -0.0, 1.0, -2.5, np.inf, -np.inf, np.nan, 1e-45, 3e38, -7e-39]
NUMBERS = {"f": [0.0, -0.0, 1.5, -np.inf, np.nan], "i": [0, 3, -1]}


def _operands(dtype, shape, rng):
    if np.dtype(dtype).kind == "f":
        with np.errstate(over="ignore"):
            a = rng.choice(np.array(EDGES), shape).astype(dtype)
    else:
        a = rng.integers(-9, 9, shape).astype(dtype)
    return rng.random(shape) > 0.5, a


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32, np.int64])
def test_masks_give_np_wheres_bits(monkeypatch, dtype):
    monkeypatch.setattr(elementwise, "MIN_MASK_ELEMENTS", 0)
    cond, a = _operands(dtype, (6, 7, 5), np.random.default_rng(1))
    for b in NUMBERS[np.dtype(dtype).kind]:
        expected = np.where(cond, a, np.array(b, dtype))
        assert elementwise._by_masks(np, expected, cond, a, b)
        for out in (None, np.empty_like(expected)):
            got = Where.forward(np, cond, a, b, out=out)
            assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes(), b


def test_a_broadcast_condition_and_a_large_array_on_two_threads():
    rng = np.random.default_rng(2)
    cond, a = _operands(np.float32, (64, 33, 40), rng)
    assert elementwise._by_masks(np, a, cond, a, 0.0)  # above MIN_MASK_ELEMENTS as it is
    with threadpool_limits(limits=2, user_api="blas"):
        for c in (cond, cond[:1], cond[:, :, :1]):
            expected = np.where(c, a, np.float32(-0.0))
            assert Where.forward(np, c, a, -0.0).tobytes() == expected.tobytes()


def test_other_operands_keep_np_where(monkeypatch):
    """An array b, a b of a wider type, a non-boolean condition: the branching copy."""
    monkeypatch.setattr(elementwise, "MIN_MASK_ELEMENTS", 0)
    cond, a = _operands(np.float32, (4, 5), np.random.default_rng(3))
    assert not elementwise._by_masks(np, a, cond, a, a)
    assert not elementwise._by_masks(np, a.astype(np.float64), cond, a, np.float64(1.0))
    assert not elementwise._by_masks(np, a, cond.astype(np.float32), a, 0.0)
    got = ops.where(Tensor(cond), Tensor(a), Tensor(-a)).numpy()
    assert got.tobytes() == np.where(cond, a, -a).tobytes()
