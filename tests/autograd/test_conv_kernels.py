"""im2col / col2im take faster paths by channel count; every path gives the reference values
(tests/graph/test_graph_conv_paths.py checks eager and graph agree through each)."""

import numpy as np
import pytest

from trainctl.autograd import Tensor, ops


def im2col_reference(x, k, stride, padding):
    x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    n, h, w, c = x.shape
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    out = np.zeros((n, oh, ow, k, k, c), x.dtype)
    for a in range(oh):
        for b in range(ow):
            out[:, a, b] = x[:, a * stride : a * stride + k, b * stride : b * stride + k, :]
    return out


def col2im_reference(cols, x_shape, k, stride, padding):
    n, h, w, c = x_shape
    padded = np.zeros((n, h + 2 * padding, w + 2 * padding, c), cols.dtype)
    for a in range(cols.shape[1]):
        for b in range(cols.shape[2]):
            padded[:, a * stride : a * stride + k, b * stride : b * stride + k, :] += cols[:, a, b]
    return padded[:, padding : padding + h, padding : padding + w, :]


@pytest.mark.parametrize("channels", [1, 3, 8, 16])
@pytest.mark.parametrize(("stride", "padding"), [(1, 0), (1, 1), (2, 1)])
def test_im2col_and_col2im_match_the_loops(channels, stride, padding):
    rng = np.random.default_rng(channels)
    x = rng.standard_normal((2, 7, 6, channels)).astype(np.float32)
    cols = ops.im2col(Tensor(x), 3, 3, stride, padding).numpy()
    np.testing.assert_array_equal(cols, im2col_reference(x, 3, stride, padding))
    grad = rng.standard_normal(cols.shape).astype(np.float32)
    image = ops.col2im(Tensor(grad), x.shape, 3, 3, stride, padding).numpy()
    np.testing.assert_allclose(image, col2im_reference(grad, x.shape, 3, stride, padding),
                               rtol=1e-6, atol=1e-6)  # fmt: skip


def test_col2im_transposes_only_for_few_channels():
    assert [ops.col2im_transposes(c) for c in (1, 2, 8, 16)] == [False, True, True, False]
