"""Eager and graph mode agree bit for bit on training BatchNorm (its per-channel BLAS sums,
tiled scale and shift and fused backward, or their Numba loops), running statistics included."""

import numpy as np
import pytest
from graph_helpers import assert_bit_for_bit

from trainctl import nn
from trainctl.autograd import norm_loops


@pytest.mark.parametrize("loops", [False, True], ids=["ufuncs", "numba_loops"])
@pytest.mark.parametrize(
    "shape, channels",
    [((6, 8, 8, 3), 32), ((2, 5, 3, 2), 7), ((1, 2, 2, 1), 64)],
    ids=["cifar_block", "odd_sizes", "batch_1"],
)
def test_graph_agrees_bit_for_bit_through_batch_norm(monkeypatch, shape, channels, loops):
    """A conv-BN-ReLU residual block: rows of many channel vectors (the first case), rows
    that hold an odd number of them (7 channels over 30 rows), and a batch of one image."""
    if loops:
        monkeypatch.setattr(norm_loops, "MIN_NORM_ELEMENTS", 0)

    def build():
        conv = nn.Conv2d(shape[-1], channels, 3, padding=1, bias=False)
        block = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels))
        return nn.Sequential(
            conv, nn.BatchNorm2d(channels), nn.ReLU(), nn.Residual(block), nn.ReLU(),
            nn.GlobalAvgPool2d(), nn.Linear(channels, 5),
        )  # fmt: skip

    rng = np.random.default_rng(0)
    batches = [
        (rng.standard_normal(shape).astype(np.float32) * 3 + 1, rng.integers(0, 5, shape[0]))
        for _ in range(3)
    ]
    assert_bit_for_bit(build, batches)
