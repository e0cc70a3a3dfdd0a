"""PyTorch as an outside oracle: same weights, same inputs, same outputs and gradients (float32).

Layouts differ: torch Linear weight = ours.T, torch conv weight = ours.transpose(3, 2, 0, 1),
torch images NCHW = ours.transpose(0, 3, 1, 2).
"""

import numpy as np
import pytest

from trainctl import nn
from trainctl.autograd import Tensor
from trainctl.backend import Generator

torch = pytest.importorskip("torch")

TOL = {"rtol": 1e-5, "atol": 1e-5}
NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)


def _randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _leaf(array):
    return torch.tensor(array, requires_grad=True)


def _ours_backward(y, upstream):
    y.backward(Tensor(upstream))


def test_linear_matches_torch():
    layer = nn.Linear(5, 3, generator=Generator(0))
    x, g = _randn(4, 5), _randn(4, 3, seed=1)
    ref = torch.nn.Linear(5, 3)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(layer.weight.numpy().T))
        ref.bias.copy_(torch.tensor(layer.bias.numpy()))
    tx = _leaf(x)
    ty = ref(tx)
    ty.backward(torch.tensor(g))

    ox = Tensor(x, requires_grad=True)
    oy = layer(ox)
    _ours_backward(oy, g)
    np.testing.assert_allclose(oy.numpy(), ty.detach().numpy(), **TOL)
    np.testing.assert_allclose(ox.grad.numpy(), tx.grad.numpy(), **TOL)
    np.testing.assert_allclose(layer.weight.grad.numpy(), ref.weight.grad.numpy().T, **TOL)
    np.testing.assert_allclose(layer.bias.grad.numpy(), ref.bias.grad.numpy(), **TOL)


def test_conv2d_stride2_padding1_matches_torch():
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, generator=Generator(0))
    x = _randn(2, 7, 7, 3)
    ref = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(conv.weight.numpy().transpose(3, 2, 0, 1)))
        ref.bias.copy_(torch.tensor(conv.bias.numpy()))
    tx = _leaf(x.transpose(NHWC_TO_NCHW))
    ty = ref(tx)
    g = _randn(*ty.shape, seed=1)  # NCHW
    ty.backward(torch.tensor(g))

    ox = Tensor(x, requires_grad=True)
    oy = conv(ox)
    _ours_backward(oy, g.transpose(NCHW_TO_NHWC).copy())
    np.testing.assert_allclose(oy.numpy(), ty.detach().numpy().transpose(NCHW_TO_NHWC), **TOL)
    np.testing.assert_allclose(ox.grad.numpy(), tx.grad.numpy().transpose(NCHW_TO_NHWC), **TOL)
    np.testing.assert_allclose(
        conv.weight.grad.numpy(), ref.weight.grad.numpy().transpose(2, 3, 1, 0), **TOL
    )
    np.testing.assert_allclose(conv.bias.grad.numpy(), ref.bias.grad.numpy(), **TOL)


def test_batch_norm2d_training_matches_torch():
    bn = nn.BatchNorm2d(3, momentum=0.2)
    ref = torch.nn.BatchNorm2d(3, momentum=0.2)
    weight, bias = _randn(3, seed=5) + 1, _randn(3, seed=6)
    bn.load_state_dict({**bn.state_dict(), "weight": weight, "bias": bias})
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(weight))
        ref.bias.copy_(torch.tensor(bias))

    for step in range(3):
        x = _randn(4, 5, 5, 3, seed=step) * 2 + step
        g = _randn(4, 5, 5, 3, seed=10 + step)
        bn.zero_grad()
        ref.zero_grad()
        tx = _leaf(x.transpose(NHWC_TO_NCHW))
        ty = ref(tx)
        ty.backward(torch.tensor(g.transpose(NHWC_TO_NCHW)))
        ox = Tensor(x, requires_grad=True)
        oy = bn(ox)
        _ours_backward(oy, g)
        np.testing.assert_allclose(oy.numpy(), ty.detach().numpy().transpose(NCHW_TO_NHWC), **TOL)
        np.testing.assert_allclose(ox.grad.numpy(), tx.grad.numpy().transpose(NCHW_TO_NHWC), **TOL)
        np.testing.assert_allclose(bn.weight.grad.numpy(), ref.weight.grad.numpy(), **TOL)
        np.testing.assert_allclose(bn.bias.grad.numpy(), ref.bias.grad.numpy(), **TOL)
        np.testing.assert_allclose(bn.running_mean.numpy(), ref.running_mean.numpy(), **TOL)
        np.testing.assert_allclose(bn.running_var.numpy(), ref.running_var.numpy(), **TOL)

    x = _randn(2, 5, 5, 3, seed=99)
    bn.eval()
    ref.eval()
    expected = ref(torch.tensor(x.transpose(NHWC_TO_NCHW))).detach().numpy()
    np.testing.assert_allclose(bn(Tensor(x)).numpy(), expected.transpose(NCHW_TO_NHWC), **TOL)


def test_layer_norm_matches_torch():
    ln = nn.LayerNorm((3, 4))
    weight, bias = _randn(3, 4, seed=5), _randn(3, 4, seed=6)
    ln.load_state_dict({"weight": weight, "bias": bias})
    ref = torch.nn.LayerNorm((3, 4))
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(weight))
        ref.bias.copy_(torch.tensor(bias))
    x, g = _randn(2, 3, 4) * 3 + 1, _randn(2, 3, 4, seed=1)
    tx = _leaf(x)
    ty = ref(tx)
    ty.backward(torch.tensor(g))
    ox = Tensor(x, requires_grad=True)
    oy = ln(ox)
    _ours_backward(oy, g)
    np.testing.assert_allclose(oy.numpy(), ty.detach().numpy(), **TOL)
    np.testing.assert_allclose(ox.grad.numpy(), tx.grad.numpy(), **TOL)
    np.testing.assert_allclose(ln.weight.grad.numpy(), ref.weight.grad.numpy(), **TOL)
    np.testing.assert_allclose(ln.bias.grad.numpy(), ref.bias.grad.numpy(), **TOL)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_with_label_smoothing_matches_torch(reduction):
    logits, labels = _randn(8, 5) * 3, np.random.default_rng(1).integers(0, 5, 8)
    tl = _leaf(logits)
    tloss = torch.nn.functional.cross_entropy(
        tl, torch.tensor(labels), label_smoothing=0.1, reduction=reduction
    )
    tloss.backward()
    ol = Tensor(logits, requires_grad=True)
    oloss = nn.cross_entropy(ol, labels, label_smoothing=0.1, reduction=reduction)
    oloss.backward()
    np.testing.assert_allclose(oloss.numpy(), tloss.detach().numpy(), **TOL)
    np.testing.assert_allclose(ol.grad.numpy(), tl.grad.numpy(), **TOL)


def test_gelu_matches_torch_tanh_approximation():
    x = _randn(50) * 3
    expected = torch.nn.functional.gelu(torch.tensor(x), approximate="tanh").numpy()
    np.testing.assert_allclose(nn.GELU()(Tensor(x)).numpy(), expected, **TOL)


def test_bce_with_logits_matches_torch():
    x, y = _randn(6, 3) * 4, np.random.default_rng(2).uniform(0, 1, (6, 3)).astype(np.float32)
    tx = _leaf(x)
    tloss = torch.nn.functional.binary_cross_entropy_with_logits(tx, torch.tensor(y))
    tloss.backward()
    ox = Tensor(x, requires_grad=True)
    oloss = nn.binary_cross_entropy_with_logits(ox, y)
    oloss.backward()
    np.testing.assert_allclose(oloss.numpy(), tloss.detach().numpy(), **TOL)
    np.testing.assert_allclose(ox.grad.numpy(), tx.grad.numpy(), **TOL)


def test_upsample2d_matches_torch_nearest():
    x, g = _randn(2, 3, 4, 5), _randn(2, 6, 8, 5, seed=1)
    tx = _leaf(x.transpose(NHWC_TO_NCHW))
    ty = torch.nn.Upsample(scale_factor=2, mode="nearest")(tx)
    ty.backward(torch.tensor(g.transpose(NHWC_TO_NCHW)))
    ox = Tensor(x, requires_grad=True)
    oy = nn.Upsample2d(2)(ox)
    _ours_backward(oy, g)
    np.testing.assert_array_equal(oy.numpy(), ty.detach().numpy().transpose(NCHW_TO_NHWC))
    np.testing.assert_allclose(ox.grad.numpy(), tx.grad.numpy().transpose(NCHW_TO_NHWC), **TOL)
    np.testing.assert_array_equal(oy.numpy(), x.repeat(2, axis=1).repeat(2, axis=2))
