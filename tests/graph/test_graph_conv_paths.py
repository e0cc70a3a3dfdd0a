"""Eager and graph mode agree bit for bit on convolutions through every im2col/col2im path."""

import numpy as np
from graph_helpers import assert_bit_for_bit

from trainctl import nn


def test_graph_agrees_bit_for_bit_through_every_conv_path():
    """conv 1->4 (one-channel im2col), 4->16 (col2im of 4 channels, transposed), 16->3
    (col2im of 16 channels, direct)."""

    def build():
        return nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 16, 3, stride=2),
            nn.Tanh(), nn.Conv2d(16, 3, 3, padding=1), nn.Flatten(), nn.Linear(3 * 4 * 4, 5),
        )  # fmt: skip

    rng = np.random.default_rng(0)
    batches = [
        (rng.standard_normal((6, 10, 10, 1)).astype(np.float32), rng.integers(0, 5, 6))
        for _ in range(4)
    ]
    assert_bit_for_bit(build, batches)
