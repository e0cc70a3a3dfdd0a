"""PyTorch as an outside oracle (float32): forward values and input gradients of a handful of
ops. Our images are NHWC with conv weights (KH, KW, Cin, Cout); PyTorch's are NCHW and
(Cout, Cin, KH, KW), so the test permutes. Skipped when torch is not installed."""

import numpy as np
import pytest
from autograd_cases import conv2d
from kinks import KINKS

from trainctl.autograd import ops, tensor

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def ours_and_torch(arrays, ours_fn, torch_fn, device, grad=None):
    """Run both on the same float32 inputs with the same upstream gradient; return
    (our output, torch output, our input grads, torch input grads) as NumPy."""
    grad = [True] * len(arrays) if grad is None else grad
    mine = [tensor(a, device=device, requires_grad=g) for a, g in zip(arrays, grad, strict=True)]
    theirs = [torch.tensor(a, requires_grad=g) for a, g in zip(arrays, grad, strict=True)]
    out, ref = ours_fn(*mine), torch_fn(*theirs)
    upstream = np.random.default_rng(9).standard_normal(out.shape).astype(np.float32)
    out.backward(upstream)
    ref.backward(torch.tensor(upstream))
    picked = [i for i, g in enumerate(grad) if g]
    return (
        out.numpy(),
        ref.detach().numpy(),
        [mine[i].grad.numpy() for i in picked],
        [theirs[i].grad.numpy() for i in picked],
    )


def check(result):
    out, ref, grads, ref_grads = result
    assert out.dtype == np.float32 and out.shape == ref.shape
    np.testing.assert_allclose(out, ref, **TOLERANCE)
    for g, r in zip(grads, ref_grads, strict=True):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, r, **TOLERANCE)


def normal(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize(
    "shape_a, shape_b",
    [((3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2))],
    ids=["2d", "batched", "batch_broadcast"],
)
def test_matmul(shape_a, shape_b, device):
    rng = np.random.default_rng(0)
    arrays = [normal(rng, *shape_a), normal(rng, *shape_b)]
    check(ours_and_torch(arrays, ops.matmul, torch.matmul, device))


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.25], ids=lambda e: f"smoothing={e}")
def test_softmax_cross_entropy(smoothing, device):
    rng = np.random.default_rng(1)
    logits, labels = 3 * normal(rng, 6, 5), rng.integers(0, 5, 6)
    check(
        ours_and_torch(
            [logits, labels],
            lambda z, y: ops.softmax_cross_entropy(z, y, smoothing),
            lambda z, y: F.cross_entropy(z, y, reduction="none", label_smoothing=smoothing),
            device,
            grad=[True, False],
        )
    )


def to_nchw(x):
    return x.permute(0, 3, 1, 2)


@pytest.mark.parametrize(
    "kernel, stride, ties",
    [(2, 2, False), (3, 1, False), (3, 2, False), (2, 2, True), (3, 2, True)],
    ids=["k2_s2", "k3_s1_overlap", "k3_s2_overlap", "k2_s2_ties", "k3_s2_ties"],
)
def test_max_pool2d(kernel, stride, ties, device):
    rng = np.random.default_rng(2)
    x = normal(rng, 2, 7, 6, 3)
    if ties:  # both route a window's gradient to its first maximum
        x = np.round(x)
    check(
        ours_and_torch(
            [x],
            lambda t: ops.max_pool2d(t, kernel, stride),
            lambda t: F.max_pool2d(to_nchw(t), kernel, stride).permute(0, 2, 3, 1),
            device,
        )
    )


@pytest.mark.parametrize(
    "kernel, stride, padding",
    [(3, 1, 0), (3, 2, 1), (1, 1, 0), (2, 2, 1)],
    ids=["k3_s1_p0", "k3_s2_p1", "k1", "k2_s2_p1"],
)
def test_conv2d_via_im2col(kernel, stride, padding, device):
    rng = np.random.default_rng(3)
    x, w = normal(rng, 2, 6, 5, 3), normal(rng, kernel, kernel, 3, 4)

    def torch_conv(x, w):
        weight = w.permute(3, 2, 0, 1)  # (KH, KW, Cin, Cout) -> (Cout, Cin, KH, KW)
        out = F.conv2d(to_nchw(x), weight, stride=stride, padding=padding)
        return out.permute(0, 2, 3, 1)

    check(ours_and_torch([x, w], lambda x, w: conv2d(x, w, stride, padding), torch_conv, device))


@pytest.mark.parametrize("axis", [-1, 0], ids=["last", "first"])
def test_softmax_and_log_softmax(axis, device):
    rng = np.random.default_rng(4)
    x = 4 * normal(rng, 3, 5)
    check(ours_and_torch([x], lambda t: ops.softmax(t, axis), lambda t: t.softmax(axis), device))
    check(
        ours_and_torch(
            [x], lambda t: ops.log_softmax(t, axis), lambda t: t.log_softmax(axis), device
        )
    )


SMOOTH = {
    "silu": (ops.silu, F.silu),
    "softplus": (ops.softplus, F.softplus),
    "elu": (lambda t: ops.elu(t, 0.7), lambda t: F.elu(t, 0.7)),
}


@pytest.mark.parametrize("name", SMOOTH)
def test_smooth_activations(name, device):
    x = 6 * normal(np.random.default_rng(6), 4, 5)  # both branches, and large |x|
    check(ours_and_torch([x], *SMOOTH[name], device))


def test_embedding_lookup(device):
    rng = np.random.default_rng(5)
    table, indices = normal(rng, 6, 3), np.array([[0, 5, 5], [2, 0, 5]])
    check(
        ours_and_torch(
            [table, indices], ops.gather_rows, lambda t, i: F.embedding(i, t), device, [True, False]
        )
    )


@pytest.mark.parametrize("kink", KINKS, ids=lambda k: k.name)
def test_gradients_at_kinks_match_torch(kink, device):
    """The engine's convention at every kink is PyTorch's, and the table says what it is."""
    arrays = kink.arrays(np.float32)
    mine = [tensor(a, device=device, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    kink.fn(*mine).sum().backward()
    kink.torch_fn(torch, *theirs).sum().backward()
    for m, t, want in zip(mine, theirs, kink.expected(np.float32), strict=True):
        np.testing.assert_array_equal(t.grad.numpy(), want)
        np.testing.assert_array_equal(m.grad.numpy(), t.grad.numpy())
