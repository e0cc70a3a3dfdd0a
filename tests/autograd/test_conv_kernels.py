"""im2col / col2im take faster paths by channel count; every path gives the reference values
(tests/graph/test_graph_conv_paths.py checks eager and graph agree through each)."""

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from gradcheck import gradcheck

from trainctl.autograd import Tensor, conv_loops, ops
from trainctl.autograd.ops import conv as conv_ops
from trainctl.autograd.ops.layers import pool_grad_runs_loop


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


@pytest.fixture(params=["ufuncs", "loop"])
def kernel_path(request, monkeypatch):
    """Run a test once with the ufunc kernels and once with every Numba loop forced on."""
    if request.param == "loop":
        monkeypatch.setattr(conv_loops, "MIN_KERNEL_ELEMENTS", 0)
    else:
        monkeypatch.setattr(conv_loops, "MIN_KERNEL_ELEMENTS", 10**12)
    return request.param


def both_paths(monkeypatch, compute):
    """`compute()` with the ufunc kernels, then with the Numba loops."""
    results = []
    for threshold in (10**12, 0):
        monkeypatch.setattr(conv_loops, "MIN_KERNEL_ELEMENTS", threshold)
        results.append(compute())
    return results


@pytest.mark.parametrize("channels", [1, 3, 8, 16, 64])
@pytest.mark.parametrize(("batch", "stride", "padding"), [(2, 1, 0), (1, 1, 1), (2, 2, 1)])
def test_the_col2im_loop_gives_the_ufunc_paths_bits(monkeypatch, channels, batch, stride, padding):
    rng = np.random.default_rng(channels)
    shape = (batch, 7, 6, channels)
    cols = rng.standard_normal(im2col_reference(np.zeros(shape), 3, stride, padding).shape)
    cols = cols.astype(np.float32)
    ufuncs, loop = both_paths(
        monkeypatch, lambda: ops.col2im(Tensor(cols), shape, 3, 3, stride, padding).numpy()
    )
    np.testing.assert_array_equal(loop, ufuncs)
    np.testing.assert_allclose(loop, col2im_reference(cols, shape, 3, stride, padding),
                               rtol=1e-6, atol=1e-6)  # fmt: skip


@pytest.mark.parametrize(("kernel", "stride", "size"), [(2, 2, 8), (2, 2, 7), (3, 3, 9), (2, 3, 8)])
def test_the_maxpool_grad_runs_loop_gives_the_ufunc_paths_bits(monkeypatch, kernel, stride, size):
    """Ties (values rounded to a coarse grid) go to the window's first maximum either way."""
    rng = np.random.default_rng(size)
    x = np.round(rng.standard_normal((2, size, size, 5)), 0).astype(np.float32)
    pooled = ops.max_pool2d(Tensor(x), kernel, stride).numpy()
    g = rng.standard_normal(pooled.shape).astype(np.float32)
    g[0, 0, 0] = -0.0  # 0.0 + -0.0 is +0.0 on both paths

    def grad():
        return ops.max_pool2d_grad(Tensor(g), Tensor(x), Tensor(pooled), kernel, stride).numpy()

    ufuncs, loop = both_paths(monkeypatch, grad)
    assert np.array_equal(loop, ufuncs) and np.array_equal(np.signbit(loop), np.signbit(ufuncs))


def test_the_maxpool_grad_loop_takes_a_broadcast_gradient(monkeypatch):
    """A global average pool's gradient arrives as a broadcast view (zero strides), which
    the loop reads once a row (10x slower read at every window offset)."""
    rng = np.random.default_rng(7)
    x = np.round(rng.standard_normal((3, 8, 8, 4)), 0).astype(np.float32)
    pooled = ops.max_pool2d(Tensor(x), 2).numpy()
    per_image = rng.standard_normal((3, 1, 1, 4)).astype(np.float32)
    per_image[0, 0, 0, 0] = -0.0
    g = np.broadcast_to(per_image, pooled.shape)

    def grad():
        return ops.max_pool2d_grad(Tensor(g), Tensor(x), Tensor(pooled), 2, 2).numpy()

    ufuncs, loop = both_paths(monkeypatch, grad)
    assert np.array_equal(loop, ufuncs) and np.array_equal(np.signbit(loop), np.signbit(ufuncs))
    assert (loop != 0).sum() == (g != 0).sum()  # every window routes its gradient once


@pytest.mark.parametrize(("kernel", "stride"), [(2, 2), (3, 2), (3, 3), (2, 1)])
def test_the_maxpool_loop_gives_the_ufunc_paths_bits(monkeypatch, kernel, stride):
    """Ties of 0.0 and -0.0 (np.maximum keeps the later one), NaN and inf, overlapping
    windows included."""
    rng = np.random.default_rng(kernel * 10 + stride)
    x = np.round(rng.standard_normal((3, 9, 9, 5)), 0).astype(np.float32)
    x[x == 0] = rng.choice([0.0, -0.0], int((x == 0).sum()))
    x[0, 0, 0, 0], x[1, 2, 3, 1], x[2, 4, 4, 2] = np.nan, np.nan, np.inf
    ufuncs, loop = both_paths(
        monkeypatch, lambda: ops.max_pool2d(Tensor(x), kernel, stride).numpy()
    )
    assert np.array_equal(loop, ufuncs, equal_nan=True)
    assert np.array_equal(np.signbit(loop), np.signbit(ufuncs)) and (ufuncs == 0).any()


def test_overlapping_pool_windows_keep_the_ufunc_path(monkeypatch):
    monkeypatch.setattr(conv_loops, "MIN_KERNEL_ELEMENTS", 0)
    x = np.zeros((1, 9, 9, 2), np.float32)
    assert not pool_grad_runs_loop(np, x, 3, 2)
    assert pool_grad_runs_loop(np, x, 3, 3)


def test_numba_loops_take_only_float32_and_float64(monkeypatch):
    """Numba has no float16 (mixed precision pools and unfolds in it) or bfloat16."""
    monkeypatch.setattr(conv_loops, "MIN_KERNEL_ELEMENTS", 0)
    assert [conv_loops.runs_loop(np, np.zeros(4, t)) for t in ("f4", "f8", "f2")] == [
        True, True, False,
    ]  # fmt: skip
    x = np.arange(64, dtype=np.float16).reshape(1, 8, 8, 1)
    pooled = ops.max_pool2d(Tensor(x), 2)
    grad = ops.max_pool2d_grad(Tensor(np.ones_like(pooled.numpy())), Tensor(x), pooled, 2, 2)
    assert pooled.numpy().dtype == np.float16 and grad.numpy()[0, 1, 1, 0] == 1


def test_small_arrays_never_import_numba():
    code = (
        "import sys, numpy as np\n"
        "from trainctl.autograd import Tensor, ops\n"
        "x = Tensor(np.ones((2, 8, 8, 3), np.float32), requires_grad=True)\n"
        "ops.max_pool2d(ops.col2im(ops.im2col(x, 3, 3, 1, 1), x.shape, 3, 3, 1, 1), 2).sum()"
        ".backward()\n"
        "assert 'numba' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("stride", "padding"), [(1, 1), (2, 0)])
def test_conv_and_pool_gradients_match_finite_differences(kernel_path, stride, padding):
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((1, 6, 6, 3)), requires_grad=True)

    def fn():
        cols = ops.im2col(x, 3, 3, stride, padding)
        return ops.max_pool2d(ops.col2im(cols * cols, x.shape, 3, 3, stride, padding), 2)

    assert gradcheck(fn, [x]) < 1e-6


@pytest.fixture(params=["whole_batch", "chunks"])
def chunking(request, monkeypatch):
    """Each conv op over one chunk, then in chunks of 2 images (the last one shorter)."""
    if request.param == "chunks":
        shape = (5, 6, 6, 3)
        per_image = np.prod(ops.Im2col.infer(np.empty(shape), 3, 3, 1, 1).shape[1:]) * 8
        monkeypatch.setattr(conv_ops, "CHUNK_BYTES", 2 * int(per_image))
        assert conv_ops.chunk_size(shape, 3, 3, 1, 1, 8) == 2
    return request.param


@pytest.mark.parametrize(("stride", "padding"), [(1, 1), (2, 0)])
def test_conv_ops_match_finite_differences(kernel_path, chunking, stride, padding):
    """float64, through the Numba and ufunc col2im, whole batch and in chunks (the bias added
    chunk by chunk)."""
    rng = np.random.default_rng(4)
    x = Tensor(rng.standard_normal((5, 6, 6, 3)), requires_grad=True)
    w = Tensor(rng.standard_normal((3, 3, 3, 4)), requires_grad=True)
    b = Tensor(rng.standard_normal(4), requires_grad=True)
    assert gradcheck(lambda: ops.conv2d(x, w, stride, padding, bias=b), [x, w, b]) < 1e-6


torch_only = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="torch is not installed"
)


@torch_only
@pytest.mark.parametrize(
    ("cin", "cout", "stride", "padding", "batch"),
    [(1, 8, 1, 1, 3), (3, 16, 2, 1, 2), (64, 8, 1, 0, 1), (8, 64, 1, 1, 5)],
)
def test_conv_ops_match_pytorch(kernel_path, chunking, cin, cout, stride, padding, batch):
    """Forward with bias, input, weight and bias gradient in float32 against torch's conv2d
    (NCHW)."""
    import torch

    rng = np.random.default_rng(cin)
    x = rng.standard_normal((batch, 6, 6, cin)).astype(np.float32)
    w = (rng.standard_normal((3, 3, cin, cout)) / np.sqrt(9 * cin)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    tw = torch.tensor(w.transpose(3, 2, 0, 1), requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=padding)
    g = rng.standard_normal(ty.shape).astype(np.float32)
    ty.backward(torch.tensor(g))
    g = g.transpose(0, 2, 3, 1)
    y = ops.conv2d(Tensor(x), Tensor(w), stride, padding, bias=Tensor(b)).numpy()
    dx = ops.conv2d_input_grad(Tensor(g), Tensor(w), x.shape, stride, padding).numpy()
    dw = ops.conv2d_weight_grad(Tensor(x), Tensor(g), 3, 3, stride, padding).numpy()
    db = ops.channel_sum(Tensor(g)).numpy()  # the bias gradient conv2d's vjp gives
    tol = {"rtol": 1e-5, "atol": 1e-5}
    np.testing.assert_allclose(y, ty.detach().numpy().transpose(0, 2, 3, 1), **tol)
    np.testing.assert_allclose(dx, tx.grad.numpy().transpose(0, 2, 3, 1), **tol)
    np.testing.assert_allclose(dw, tw.grad.numpy().transpose(2, 3, 1, 0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(db, tb.grad.numpy(), rtol=1e-5, atol=1e-4)


@torch_only
@pytest.mark.parametrize(("kernel", "stride"), [(2, 2), (3, 3), (3, 2)])
def test_max_pool_grad_matches_pytorch(kernel_path, kernel, stride):
    """Ties included (a coarse grid): both send a window's gradient to its first maximum."""
    import torch

    rng = np.random.default_rng(kernel)
    x = np.round(rng.standard_normal((2, 9, 9, 6)), 0).astype(np.float32)
    tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    ty = torch.nn.functional.max_pool2d(tx, kernel, stride)
    g = rng.standard_normal(ty.shape).astype(np.float32)
    ty.backward(torch.tensor(g))
    pooled = ops.max_pool2d(Tensor(x), kernel, stride)
    grad = ops.max_pool2d_grad(Tensor(g.transpose(0, 2, 3, 1)), Tensor(x), pooled, kernel, stride)
    np.testing.assert_array_equal(pooled.numpy(), ty.detach().numpy().transpose(0, 2, 3, 1))
    np.testing.assert_allclose(grad.numpy(), tx.grad.numpy().transpose(0, 2, 3, 1), atol=1e-6)


@torch_only
def test_col2im_matches_pytorch_fold(kernel_path):
    import torch

    rng = np.random.default_rng(5)
    shape = (2, 7, 6, 16)
    cols = rng.standard_normal(ops.Im2col.infer(np.empty(shape), 3, 3, 2, 1).shape)
    cols = cols.astype(np.float32)
    n, oh, ow, kh, kw, c = cols.shape
    folded = torch.nn.functional.fold(
        torch.tensor(cols.transpose(0, 5, 3, 4, 1, 2).reshape(n, c * kh * kw, oh * ow)),
        output_size=shape[1:3], kernel_size=3, stride=2, padding=1,
    )  # fmt: skip
    image = ops.col2im(Tensor(cols), shape, 3, 3, 2, 1).numpy()
    np.testing.assert_allclose(image, folded.numpy().transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("threshold", [10**12, 0], ids=["ufuncs", "loops"])
@pytest.mark.parametrize("channels", [4, 16])
@pytest.mark.parametrize("padding", [0, 1])
def test_chunks_on_two_threads_give_one_threads_bits(monkeypatch, padding, channels, threshold):
    """Each chunk's GEMM runs on one BLAS thread however many threads share the chunks, so
    forward, input gradient and weight gradient (its chunk products added in chunk order)
    do not depend on the thread count; called twice, as a second thread's scratch is kept
    (and the input gradient's col2im must not write a border the forward reads as zero)."""
    from threadpoolctl import threadpool_limits

    from trainctl.autograd import chunk_threads

    monkeypatch.setattr(conv_loops, "MIN_KERNEL_ELEMENTS", threshold)
    monkeypatch.setattr(conv_ops, "CHUNK_BYTES", 9216)  # 1-2 images a chunk: 5 chunks or more
    monkeypatch.setattr(chunk_threads, "MIN_CHUNKS_PER_THREAD", 1)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 9, 9, channels)).astype(np.float32)
    w = rng.standard_normal((3, 3, channels, 6)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    n, oh, ow = conv_ops.Conv2d.infer(Tensor(x), Tensor(w), stride=1, padding=padding).shape[:3]
    g = rng.standard_normal((n, oh, ow, 6)).astype(np.float32)
    results = {}
    for threads in (1, 2, 2):
        with threadpool_limits(limits=threads, user_api="blas"):
            chunks = conv_ops.chunk_size(x.shape, 3, 3, 1, padding, 4)
            assert chunk_threads.threads_for(np, -(-7 // chunks)) == threads
            results[threads] = (
                conv_ops.Conv2d.forward(np, x, w, b, stride=1, padding=padding),
                conv_ops.Conv2dInputGrad.forward(np, g, w, x.shape, 1, padding),
                conv_ops.Conv2dWeightGrad.forward(np, x, g, 3, 3, 1, padding),
            )
            if threads == 2:
                for one, two in zip(results[1], results[2], strict=True):
                    np.testing.assert_array_equal(one, two)
