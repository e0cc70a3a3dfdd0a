"""Eager and graph mode agree bit for bit on convolutions through every im2col/col2im path,
with the NumPy ufunc kernels and with the Numba loops of `autograd/conv_loops.py`."""

import numpy as np
import pytest
from graph_helpers import assert_bit_for_bit

from trainctl import nn
from trainctl.autograd import conv_loops
from trainctl.autograd.ops import conv as conv_ops


def image_batches(count, n, size, channels, classes):
    rng = np.random.default_rng(0)
    return [
        (
            rng.standard_normal((n, size, size, channels)).astype(np.float32),
            rng.integers(0, classes, n),
        )
        for _ in range(count)
    ]


@pytest.mark.parametrize("threshold", [10**12, 0], ids=["ufuncs", "loops"])
@pytest.mark.parametrize("chunk_bytes", [2 << 20, 14400], ids=["whole_batch", "chunks"])
def test_graph_agrees_bit_for_bit_through_every_conv_path(monkeypatch, threshold, chunk_bytes):
    """conv 1->4 (one-channel patches, tap by tap), 4->16 (col2im of 4 channels, transposed),
    16->3 (col2im of 16 channels, direct). 14400 bytes: the first conv in chunks of 4 images
    and 2, the third of 1."""
    monkeypatch.setattr(conv_loops, "MIN_KERNEL_ELEMENTS", threshold)
    monkeypatch.setattr(conv_ops, "CHUNK_BYTES", chunk_bytes)

    def build():
        return nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 16, 3, stride=2),
            nn.Tanh(), nn.Conv2d(16, 3, 3, padding=1), nn.Flatten(), nn.Linear(3 * 4 * 4, 5),
        )  # fmt: skip

    assert_bit_for_bit(build, image_batches(4, 6, 10, 1, 5))


@pytest.mark.parametrize("threshold", [10**12, 0], ids=["ufuncs", "loops"])
@pytest.mark.parametrize("chunk_bytes", [2 << 20, 9216], ids=["whole_batch", "chunks"])
@pytest.mark.parametrize("batch", [1, 3])
def test_graph_agrees_bit_for_bit_with_pools_and_64_channels(
    monkeypatch, threshold, chunk_bytes, batch
):
    """9216 bytes: chunks of 2 images for the first conv (the last one shorter), of 1 for
    the second."""
    monkeypatch.setattr(conv_loops, "MIN_KERNEL_ELEMENTS", threshold)
    monkeypatch.setattr(conv_ops, "CHUNK_BYTES", chunk_bytes)

    def build():
        return nn.Sequential(
            nn.Conv2d(2, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 8, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2, 1),
            nn.Flatten(), nn.Linear(8, 3),
        )  # fmt: skip

    assert_bit_for_bit(build, image_batches(3, batch, 8, 2, 3))
