"""Layer behaviour: values against NumPy, BatchNorm statistics, dropout masks, shape errors."""

import math

import numpy as np
import pytest

from trainctl import backend, nn
from trainctl.autograd import Tensor, no_grad
from trainctl.backend import Generator
from trainctl.errors import ShapeError


def _randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _conv_reference(x, w, b, stride, padding):
    """Direct NHWC cross-correlation loops, independent of im2col."""
    x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    n, h, wd, _ = x.shape
    k, cout = w.shape[0], w.shape[3]
    oh, ow = (h - k) // stride + 1, (wd - k) // stride + 1
    out = np.zeros((n, oh, ow, cout))
    for i in range(oh):
        for j in range(ow):
            window = x[:, i * stride : i * stride + k, j * stride : j * stride + k, :]
            out[:, i, j, :] = np.tensordot(window, w, axes=([1, 2, 3], [0, 1, 2]))
    return out + b


@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 1), (1, 2)])
def test_conv2d_matches_direct_loops(stride, padding, device):
    conv = nn.Conv2d(3, 4, 3, stride=stride, padding=padding, generator=Generator(0)).to(device)
    x = _randn(2, 7, 6, 3)
    y = conv(Tensor(x, device=device)).numpy()
    expected = _conv_reference(x, conv.weight.numpy(), conv.bias.numpy(), stride, padding)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_linear_is_x_at_w_plus_b(device):
    layer = nn.Linear(4, 3, generator=Generator(0)).to(device)
    x = _randn(5, 4)
    expected = x @ layer.weight.numpy() + layer.bias.numpy()
    # atol: cuBLAS sums in another order, and an output near 0 has a large relative error.
    actual = layer(Tensor(x, device=device)).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)


def test_pools_match_numpy(device):
    x = _randn(2, 4, 6, 3)
    windows = x.reshape(2, 2, 2, 3, 2, 3)  # (N, OH, KH, OW, KW, C)
    max_out = nn.MaxPool2d(2)(Tensor(x, device=device)).numpy()
    avg_out = nn.AvgPool2d(2)(Tensor(x, device=device)).numpy()
    np.testing.assert_allclose(max_out, windows.max(axis=(2, 4)))
    np.testing.assert_allclose(avg_out, windows.mean(axis=(2, 4)), rtol=1e-6, atol=1e-7)


def test_activations_match_formulas():
    x = _randn(3, 5).astype(np.float64)
    t = Tensor(x)
    np.testing.assert_allclose(nn.ReLU()(t).numpy(), np.maximum(x, 0))
    np.testing.assert_allclose(nn.LeakyReLU(0.2)(t).numpy(), np.where(x > 0, x, 0.2 * x))
    np.testing.assert_allclose(nn.Tanh()(t).numpy(), np.tanh(x))
    np.testing.assert_allclose(nn.Sigmoid()(t).numpy(), 1 / (1 + np.exp(-x)))
    softmax = nn.Softmax(axis=0)(t).numpy()
    np.testing.assert_allclose(softmax, np.exp(x) / np.exp(x).sum(axis=0), rtol=1e-12)
    exact_gelu = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x.ravel()])
    gelu = nn.GELU()(t).numpy().ravel()
    np.testing.assert_allclose(gelu, exact_gelu, atol=1e-3)  # tanh approximation
    assert not np.allclose(gelu, exact_gelu, rtol=0, atol=1e-12)


def test_activations_keep_float32():
    t = Tensor(_randn(2, 3))
    for layer in (nn.GELU(), nn.LeakyReLU(), nn.Sigmoid(), nn.LayerNorm(3), nn.Dropout(0.5)):
        assert layer(t).dtype == np.float32, layer


def test_layer_norm_normalises_each_sample():
    x = _randn(4, 6) * 3 + 2
    y = nn.LayerNorm(6)(Tensor(x)).numpy()
    np.testing.assert_allclose(y.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=1), 1, rtol=1e-3)


def test_flatten_keeps_batch_axis():
    assert nn.Flatten()(Tensor(_randn(2, 3, 4, 5))).shape == (2, 60)
    assert nn.Flatten()(Tensor(_randn(1, 7))).shape == (1, 7)


def test_embedding_looks_up_rows_and_accumulates_gradients():
    emb = nn.Embedding(5, 3, generator=Generator(0))
    indices = np.array([[1, 4], [1, 1]])
    out = emb(indices)
    np.testing.assert_array_equal(out.numpy(), emb.weight.numpy()[indices])
    out.sum().backward()
    np.testing.assert_array_equal(emb.weight.grad.numpy()[:, 0], [0, 3, 0, 0, 1])
    with pytest.raises(ShapeError, match="integer"):
        emb(Tensor([0.5, 1.0]))


# ---------------------------------------------------------------- batch norm


def _running_statistics(batches, momentum):
    """PyTorch's update by hand: a moving average of the batch mean and unbiased variance."""
    mean, var = np.zeros(batches[0].shape[-1]), np.ones(batches[0].shape[-1])
    for x in batches:
        flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
        mean = (1 - momentum) * mean + momentum * flat.mean(axis=0)
        var = (1 - momentum) * var + momentum * flat.var(axis=0, ddof=1)
    return mean, var


@pytest.mark.parametrize(
    "layer, shape",
    [(nn.BatchNorm1d, (8, 3)), (nn.BatchNorm2d, (2, 3, 4, 3))],
    ids=["bn1d", "bn2d"],
)
def test_batch_norm_running_statistics(layer, shape, device):
    bn = layer(3, momentum=0.3).to(device)
    batches = [_randn(*shape, seed=s) * (s + 1) + s for s in range(3)]
    for x in batches:
        bn(Tensor(x, device=device))
    mean, var = _running_statistics(batches, 0.3)
    np.testing.assert_allclose(bn.running_mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(bn.running_var.numpy(), var, rtol=1e-5)

    bn.eval()
    x = batches[0]
    expected = (x - mean) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(bn(Tensor(x, device=device)).numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.running_mean.numpy(), mean, rtol=1e-5)  # eval leaves them


def test_batch_norm_training_uses_batch_statistics():
    x = _randn(16, 4) * 5 - 3
    y = nn.BatchNorm1d(4)(Tensor(x)).numpy()
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=0), 1, rtol=1e-3)  # biased variance normalises


def test_batch_norm_rebinds_buffers_without_touching_old_arrays():
    bn = nn.BatchNorm1d(2)
    old_mean = bn.running_mean
    snapshot = old_mean.numpy().copy()
    x = Tensor(_randn(4, 2) + 1, requires_grad=True)
    bn(x)
    assert bn.running_mean is not old_mean
    np.testing.assert_array_equal(old_mean.numpy(), snapshot)
    assert not bn.running_mean.requires_grad and bn.running_mean._ctx is None
    assert dict(bn.named_buffers())["running_mean"] is bn.running_mean
    assert not np.allclose(bn.state_dict()["running_mean"], snapshot)


def test_batch_norm_rejects_single_value_per_channel_in_training():
    with pytest.raises(ShapeError, match="more than 1 value"):
        nn.BatchNorm1d(3)(Tensor(_randn(1, 3)))
    assert nn.BatchNorm1d(3).eval()(Tensor(_randn(1, 3))).shape == (1, 3)


# ---------------------------------------------------------------- dropout


def test_dropout_is_identity_in_eval_and_when_p_is_zero():
    x = Tensor(_randn(50, 20))
    np.testing.assert_array_equal(nn.Dropout(0.5).eval()(x).numpy(), x.numpy())
    np.testing.assert_array_equal(nn.Dropout(0.0)(x).numpy(), x.numpy())


def test_dropout_scales_kept_units_and_is_reproducible(device):
    p = 0.25
    x = Tensor(_randn(200, 50) + 5, device=device)  # no zeros in the input
    drop = nn.Dropout(p, generator=Generator(3))
    y = drop(x).numpy()
    kept = y != 0
    np.testing.assert_allclose(y[kept], x.numpy()[kept] / (1 - p), rtol=1e-6)
    assert abs(kept.mean() - (1 - p)) < 0.02
    again = nn.Dropout(p, generator=Generator(3))(x).numpy()
    np.testing.assert_array_equal(again, y)
    assert not np.array_equal(drop(x).numpy(), y)  # the next call draws a new mask


def test_dropout_uses_default_generator_seed():
    x = Tensor(np.ones((30, 30), np.float32))
    backend.manual_seed(11)
    first = nn.Dropout(0.5)(x).numpy()
    backend.manual_seed(11)
    np.testing.assert_array_equal(nn.Dropout(0.5)(x).numpy(), first)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_rejects_bad_probability(p):
    with pytest.raises(ValueError, match="dropout probability"):
        nn.Dropout(p)
    with pytest.raises(ValueError, match="dropout probability"):
        nn.functional.dropout(Tensor(_randn(2, 2)), p)


# ---------------------------------------------------------------- containers


def test_sequential_indexing_and_iteration():
    layers = [nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)]
    model = nn.Sequential(*layers)
    assert len(model) == 3
    assert model[0] is layers[0] and model[-1] is layers[2]
    assert list(model) == layers
    assert [name for name, _ in model._modules.items()] == ["0", "1", "2"]
    head = model[:2]
    assert isinstance(head, nn.Sequential) and list(head) == layers[:2]
    x = Tensor(_randn(5, 4))
    with no_grad():
        np.testing.assert_array_equal(model(x).numpy(), layers[2](layers[1](layers[0](x))).numpy())
    with pytest.raises(TypeError, match="Modules"):
        nn.Sequential(lambda v: v)


def test_residual_adds_input():
    body = nn.Linear(3, 3, generator=Generator(0))
    x = Tensor(_randn(2, 3))
    np.testing.assert_allclose(nn.Residual(body)(x).numpy(), x.numpy() + body(x).numpy(), rtol=1e-6)


# ---------------------------------------------------------------- shape errors


@pytest.mark.parametrize(
    "layer, shape, words",
    [
        (nn.Linear(4, 3), (2, 5), ["Linear", "(..., 4)", "(2, 5)"]),
        (nn.Conv2d(3, 8, 3), (2, 5, 5, 4), ["Conv2d", "(N, H, W, 3)", "(2, 5, 5, 4)"]),
        (nn.Conv2d(3, 8, 3), (5, 5, 3), ["Conv2d", "NHWC", "(5, 5, 3)"]),
        (nn.MaxPool2d(2), (4, 4), ["MaxPool2d", "(4, 4)"]),
        (nn.AvgPool2d(2), (4, 4, 3), ["AvgPool2d", "(4, 4, 3)"]),
        (nn.BatchNorm1d(3), (4, 5), ["BatchNorm1d", "(N, 3)", "(4, 5)"]),
        (nn.BatchNorm2d(3), (2, 3, 4, 4), ["BatchNorm2d", "(N, H, W, 3)", "(2, 3, 4, 4)"]),
        (nn.LayerNorm((2, 3)), (4, 3, 2), ["LayerNorm", "(..., 2, 3)", "(4, 3, 2)"]),
        (nn.Residual(nn.Linear(3, 2)), (4, 3), ["Residual", "(4, 2)", "(4, 3)"]),
    ],
)
def test_shape_errors_name_layer_and_shapes(layer, shape, words):
    with pytest.raises(ShapeError) as info:
        layer(Tensor(np.zeros(shape, np.float32)))
    for word in words:
        assert word in str(info.value)


def test_unknown_init_is_rejected():
    with pytest.raises(ValueError, match="kaiming_uniform"):
        nn.Linear(2, 2, init="orthogonal")
