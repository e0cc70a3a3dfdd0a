"""BatchNorm's Numba loops give the ufunc path's bits (tests/graph/test_graph_batch_norm.py
checks eager and graph agree through each path)."""

import numpy as np
import pytest
from gradcheck import gradcheck

from trainctl.autograd import Tensor, norm_loops, ops
from trainctl.nn import functional


def on_path(monkeypatch, path, compute):
    """`compute()` on the ufuncs or on the Numba loops (`path`: "ufuncs" or "loops")."""
    monkeypatch.setattr(norm_loops, "MIN_NORM_ELEMENTS", 0 if path == "loops" else 10**12)
    return compute()


def assert_same_bits(a, b):
    assert a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8))


SHAPES = {"channels_1": (3, 5, 4, 1), "channels_7": (2, 3, 5, 7), "channels_64": (2, 4, 4, 64)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_the_loops_give_the_ufunc_paths_bits(monkeypatch, shape, dtype):
    rng = np.random.default_rng(shape[-1])
    g, c = (rng.standard_normal(shape).astype(dtype) * 3 for _ in range(2))
    g.flat[0] = -0.0  # signed zeros come out the same way too
    mean_g, k, a, weight, bias = (rng.standard_normal(shape[-1]).astype(dtype) for _ in range(5))
    var = np.abs(k)

    def compute():
        scaled = ops.BatchNormTrain.forward(np, c, var, weight, bias, 1e-5)
        in_place = c.copy()
        ops.BatchNormTrain.forward(np, in_place, var, weight, bias, 1e-5, out=in_place)
        grad = ops.BatchNormTrainGrad.forward(np, g, c, mean_g, k, a)
        centered = ops.ChannelCenter.forward(np, g, mean_g)
        centered_in_place = g.copy()
        ops.ChannelCenter.forward(np, centered_in_place, mean_g, out=centered_in_place)
        dots = [ops.ChannelDot.forward(np, g, c), ops.ChannelDot.forward(np, c, c)]
        return scaled, in_place, grad, centered, centered_in_place, *dots

    ufuncs, loops = (on_path(monkeypatch, path, compute) for path in ("ufuncs", "loops"))
    for by_ufuncs, by_loop in zip(ufuncs, loops, strict=True):
        assert_same_bits(by_loop, by_ufuncs)
    assert_same_bits(ufuncs[3], g - mean_g)  # as the broadcast subtraction it replaces


@pytest.mark.parametrize("rows", [1, 17, 4096])
@pytest.mark.parametrize("channels", [2, 3, 8, 64])
def test_the_dot_loop_adds_as_einsum_does(monkeypatch, rows, channels):
    """Row by row from +0.0, so the sums of 4096 float32 products agree to the last bit."""
    rng = np.random.default_rng(rows + channels)
    a, b = (rng.standard_normal((rows, channels)).astype(np.float32) for _ in range(2))
    monkeypatch.setattr(norm_loops, "MIN_NORM_ELEMENTS", 0)
    for x, y in ((a, b), (a, a)):
        assert_same_bits(ops.ChannelDot.forward(np, x, y), np.einsum("ij,ij->j", x, y))


def test_a_single_channel_keeps_einsum(monkeypatch):
    """einsum sums one column in another order than a loop would: no loop there."""
    monkeypatch.setattr(norm_loops, "MIN_NORM_ELEMENTS", 0)
    a = np.ones((5, 1), np.float32)
    assert not norm_loops.runs_dot_loop(np, a, a, None)
    assert norm_loops.runs_dot_loop(np, np.ones((5, 2), np.float32), np.ones((5, 2)), None) is False
    assert norm_loops.runs_dot_loop(np, np.ones((5, 2)), np.ones((5, 2)), None)


def test_mixed_dtypes_and_small_arrays_keep_the_ufuncs(monkeypatch):
    x = np.ones((4, 3), np.float32)
    assert not norm_loops.runs_loop(np, x, np.ones(3, np.float32))
    monkeypatch.setattr(norm_loops, "MIN_NORM_ELEMENTS", 0)
    assert norm_loops.runs_loop(np, x, np.ones(3, np.float32))
    assert not norm_loops.runs_loop(np, x, np.ones(3, np.float64))
    assert not norm_loops.runs_loop(np, x.astype(np.float16))


def test_batch_norm_gradients_on_the_loops_match_finite_differences(monkeypatch):
    monkeypatch.setattr(norm_loops, "MIN_NORM_ELEMENTS", 0)
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((2, 3, 2, 4)), requires_grad=True)
    w = Tensor(rng.random(4) + 0.5, requires_grad=True)
    b = Tensor(rng.standard_normal(4), requires_grad=True)
    stats = Tensor(np.zeros(4))

    def fn():
        y = functional.batch_norm(x, w, b, stats, stats + 1.0, True)[0]
        return y * y

    assert gradcheck(fn, [x, w, b]) < 1e-6
