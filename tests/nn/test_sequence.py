"""Sequence layers and the sequence loss: shapes, the causal mask, gradients against finite
differences (float64) and errors."""

import numpy as np
import pytest
from gradcheck import gradcheck

from trainctl import nn
from trainctl.autograd import Tensor
from trainctl.backend import Generator
from trainctl.errors import ShapeError

TOLERANCE = 1e-6

CASES = {
    "attention": (lambda g: nn.MultiHeadSelfAttention(6, 2, generator=g), (2, 4, 6)),
    "attention_causal": (
        lambda g: nn.MultiHeadSelfAttention(6, 3, causal=True, generator=g),
        (2, 5, 6),
    ),
    "transformer_block": (lambda g: nn.TransformerBlock(4, 2, 2, generator=g), (2, 3, 4)),
    "transformer_block_causal": (
        lambda g: nn.TransformerBlock(4, 1, 2, causal=True, generator=g),
        (2, 4, 4),
    ),
    "positional_embedding": (lambda g: nn.PositionalEmbedding(6, 3, generator=g), (2, 4, 3)),
    "lstm": (lambda g: nn.LSTM(3, 4, generator=g), (2, 5, 3)),
}


def _input(shape, device):
    data = np.random.default_rng(1).standard_normal(shape)
    return Tensor(data, dtype=np.float64, device=device, requires_grad=True)


@pytest.mark.parametrize("name", CASES)
def test_sequence_layer_gradients(name, device):
    factory, shape = CASES[name]
    module = factory(Generator(0)).to(device, dtype=np.float64)
    x = _input(shape, device)
    assert gradcheck(lambda: module(x), [x, *module.parameters()]) < TOLERANCE


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_sequence_cross_entropy_gradient(reduction, device):
    rng = np.random.default_rng(2)
    logits = Tensor(rng.standard_normal((2, 3, 5)), device=device, requires_grad=True)
    targets = Tensor(rng.integers(0, 5, (2, 3)), device=device)

    def loss():
        return nn.sequence_cross_entropy(logits, targets, 0.1, reduction)

    assert gradcheck(loss, [logits]) < TOLERANCE


def test_sequence_cross_entropy_is_the_mean_over_positions():
    rng = np.random.default_rng(3)
    logits, targets = rng.standard_normal((2, 3, 4)), rng.integers(0, 4, (2, 3))
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    nll = -np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    per_position = nn.sequence_cross_entropy(Tensor(logits), targets, reduction="none")
    np.testing.assert_allclose(per_position.numpy(), nll, rtol=1e-12)
    mean = nn.sequence_cross_entropy(Tensor(logits), targets)
    np.testing.assert_allclose(mean.item(), nll.mean(), rtol=1e-12)
    with pytest.raises(ShapeError, match=r"got \(2, 3, 4\) and \(2, 2\)"):
        nn.sequence_cross_entropy(Tensor(logits), targets[:, :2])


def test_causal_attention_never_looks_ahead():
    """Changing the last position leaves every earlier output as it was."""
    layer = nn.MultiHeadSelfAttention(4, 2, causal=True, generator=Generator(0))
    x = np.random.default_rng(4).standard_normal((1, 5, 4)).astype(np.float32)
    changed = x.copy()
    changed[0, -1] += 10.0
    before, after = layer(Tensor(x)).numpy(), layer(Tensor(changed)).numpy()
    np.testing.assert_array_equal(before[:, :-1], after[:, :-1])
    assert not np.allclose(before[:, -1], after[:, -1])
    full = nn.MultiHeadSelfAttention(4, 2, generator=Generator(0))
    assert not np.allclose(full(Tensor(x)).numpy()[:, 0], full(Tensor(changed)).numpy()[:, 0])


def test_lstm_is_causal_and_keeps_time():
    layer = nn.LSTM(3, 5, generator=Generator(0))
    x = np.random.default_rng(5).standard_normal((2, 4, 3)).astype(np.float32)
    y = layer(Tensor(x)).numpy()
    assert y.shape == (2, 4, 5)
    np.testing.assert_allclose(layer(Tensor(x[:, :2])).numpy(), y[:, :2], rtol=1e-6)


@pytest.mark.parametrize(
    "make, shape, message",
    [
        (lambda: nn.MultiHeadSelfAttention(4, 2), (2, 3, 5), r"\(B, T, 4\)"),
        (lambda: nn.PositionalEmbedding(3, 4), (2, 5, 4), r"\(B, T <= 3, 4\)"),
        (lambda: nn.LSTM(3, 4), (2, 3), r"\(B, T, 3\)"),
    ],
)
def test_sequence_layers_name_the_shape_they_expect(make, shape, message):
    with pytest.raises(ShapeError, match=message):
        make()(Tensor(np.zeros(shape, np.float32)))


def test_heads_must_divide_the_features():
    with pytest.raises(ValueError, match="3 heads do not divide the 4 features"):
        nn.MultiHeadSelfAttention(4, 3)
