"""Large elementwise kernels cut in one part per thread (`chunk_threads.share`): the parts
cover the range once, a worker's error reaches the caller, and every shared kernel gives the
bits of a single call on one thread."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from trainctl.autograd import Tensor, chunk_threads, conv_loops, norm_loops, ops
from trainctl.autograd.ops.normalization import BatchNormTrain, BatchNormTrainGrad, ChannelCenter


def test_share_cuts_the_range_in_one_part_per_thread():
    parts = []
    with threadpool_limits(limits=2, user_api="blas"):
        chunk_threads.share(np, 7, 7, lambda a, b: parts.append((a, b)))
    assert sorted(parts) == [(0, 3), (3, 7)]
    parts.clear()
    with threadpool_limits(limits=1, user_api="blas"):
        chunk_threads.share(np, 7, 7, lambda a, b: parts.append((a, b)))
    assert parts == [(0, 7)]


def test_small_kernels_and_cupy_stay_whole(monkeypatch):
    monkeypatch.setattr(chunk_threads, "MIN_SHARED_ELEMENTS", 100)
    parts = []
    with threadpool_limits(limits=2, user_api="blas"):
        chunk_threads.share(np, 7, 99, lambda a, b: parts.append((a, b)))
        chunk_threads.share(object(), 7, 10**6, lambda a, b: parts.append((a, b)))
    assert parts == [(0, 7), (0, 7)]


def test_a_workers_error_reaches_the_caller():
    def work(start, stop):
        if start > 0:
            raise ValueError("in the worker")

    with threadpool_limits(limits=2, user_api="blas"), pytest.raises(ValueError, match="worker"):
        chunk_threads.share(np, 4, 4, work)


def _kernels(rng):
    """Each shared kernel's result on arrays large enough to run its loop."""
    x = rng.standard_normal((5, 6, 6, 4)).astype(np.float32)
    x[0, 0, 0] = -0.0
    v = rng.standard_normal(4).astype(np.float32)
    var = rng.random(4).astype(np.float32) + 0.5
    pooled = ops.max_pool2d(Tensor(x), 2).numpy()
    g_pooled = rng.standard_normal(pooled.shape).astype(np.float32)
    return {
        "relu": ops.relu(Tensor(x)).numpy(),
        "center": ChannelCenter.forward(np, x, v),
        "scale_shift": BatchNormTrain.forward(np, x, var, v, v * 2, 1e-5),
        "input_grad": BatchNormTrainGrad.forward(np, x, x * 0.5, v, v * 3, var),
        "max_pool": pooled,
        "max_pool_grad": ops.max_pool2d_grad(
            Tensor(g_pooled), Tensor(x), Tensor(pooled), 2, 2
        ).numpy(),
    }


def test_every_shared_kernel_gives_one_threads_bits(monkeypatch):
    monkeypatch.setattr(norm_loops, "MIN_NORM_ELEMENTS", 0)
    monkeypatch.setattr(conv_loops, "MIN_KERNEL_ELEMENTS", 0)
    calls = []
    real = chunk_threads._on_threads
    monkeypatch.setattr(
        chunk_threads, "_on_threads", lambda n, task: (calls.append(n), real(n, task))
    )
    with threadpool_limits(limits=1, user_api="blas"):
        one = _kernels(np.random.default_rng(0))
    assert calls == []
    with threadpool_limits(limits=2, user_api="blas"):
        two = _kernels(np.random.default_rng(0))
    assert len(calls) == len(two)  # each kernel was shared out
    for name, result in one.items():
        assert result.tobytes() == two[name].tobytes(), name
