"""PyTorch as the oracle for the sequence layers and loss: same weights and inputs, same
outputs and gradients (float32).

Layouts: our Linear weights are torch's transposed; MultiHeadSelfAttention.qkv.weight is
torch's `in_proj_weight.T`; LSTM.weight_ih / weight_hh are torch's `weight_ih_l0.T` /
`weight_hh_l0.T` and our one bias is torch's `bias_ih_l0 + bias_hh_l0`.
"""

import numpy as np
import pytest

from trainctl import nn
from trainctl.autograd import Tensor
from trainctl.backend import Generator

torch = pytest.importorskip("torch")

TOL = {"rtol": 1e-4, "atol": 1e-5}


def _randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _copy(target, array):
    with torch.no_grad():
        target.copy_(torch.tensor(array))


def _run_both(ours, theirs, x, upstream):
    """Forward and backward with the same upstream gradient; returns our and torch's x."""
    tx = torch.tensor(x, requires_grad=True)
    theirs(tx).backward(torch.tensor(upstream))
    ox = Tensor(x, requires_grad=True)
    out = ours(ox)
    out.backward(Tensor(upstream))
    np.testing.assert_allclose(out.numpy(), theirs(tx).detach().numpy(), **TOL)
    np.testing.assert_allclose(ox.grad.numpy(), tx.grad.numpy(), **TOL)


def _torch_attention(ours):
    ref = torch.nn.MultiheadAttention(ours.dim, ours.heads, batch_first=True)
    _copy(ref.in_proj_weight, ours.qkv.weight.numpy().T)
    _copy(ref.in_proj_bias, ours.qkv.bias.numpy())
    _copy(ref.out_proj.weight, ours.proj.weight.numpy().T)
    _copy(ref.out_proj.bias, ours.proj.bias.numpy())
    return ref


def _attend(ref, causal):
    def forward(x):
        mask = None
        if causal:  # True marks the keys a query may not see, as torch's bool masks do
            mask = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)
        return ref(x, x, x, attn_mask=mask, need_weights=False)[0]

    return forward


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_attention_matches_torch(causal):
    ours = nn.MultiHeadSelfAttention(8, 2, causal=causal, generator=Generator(0))
    ref = _torch_attention(ours)
    _run_both(ours, _attend(ref, causal), _randn(3, 5, 8), _randn(3, 5, 8, seed=1))
    np.testing.assert_allclose(
        ours.qkv.weight.grad.numpy(), ref.in_proj_weight.grad.numpy().T, **TOL
    )
    np.testing.assert_allclose(ours.qkv.bias.grad.numpy(), ref.in_proj_bias.grad.numpy(), **TOL)
    np.testing.assert_allclose(
        ours.proj.weight.grad.numpy(), ref.out_proj.weight.grad.numpy().T, **TOL
    )


def test_transformer_block_matches_torch_pre_norm_encoder_layer():
    ours = nn.TransformerBlock(8, 2, mlp_ratio=3, causal=True, generator=Generator(0))
    ref = torch.nn.TransformerEncoderLayer(
        8, 2, dim_feedforward=24, dropout=0.0, batch_first=True, norm_first=True,
        activation=lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    )  # fmt: skip
    attention = _torch_attention(ours.attn)
    ref.self_attn.load_state_dict(attention.state_dict())
    for theirs, mine in ((ref.linear1, ours.fc1), (ref.linear2, ours.fc2)):
        _copy(theirs.weight, mine.weight.numpy().T)
        _copy(theirs.bias, mine.bias.numpy())
    mask = torch.ones(4, 4, dtype=torch.bool).triu(1)
    _run_both(ours, lambda x: ref(x, src_mask=mask), _randn(2, 4, 8), _randn(2, 4, 8, seed=1))
    np.testing.assert_allclose(ours.fc1.weight.grad.numpy(), ref.linear1.weight.grad.numpy().T,
                               **TOL)  # fmt: skip
    np.testing.assert_allclose(ours.norm1.weight.grad.numpy(), ref.norm1.weight.grad.numpy(),
                               **TOL)  # fmt: skip


def test_lstm_matches_torch():
    ours = nn.LSTM(3, 4, generator=Generator(0))
    ref = torch.nn.LSTM(3, 4, batch_first=True)
    _copy(ref.weight_ih_l0, ours.weight_ih.numpy().T)
    _copy(ref.weight_hh_l0, ours.weight_hh.numpy().T)
    _copy(ref.bias_ih_l0, ours.bias.numpy())
    _copy(ref.bias_hh_l0, np.zeros(16, np.float32))
    _run_both(ours, lambda x: ref(x)[0], _randn(2, 6, 3), _randn(2, 6, 4, seed=1))
    np.testing.assert_allclose(ours.weight_ih.grad.numpy(), ref.weight_ih_l0.grad.numpy().T, **TOL)
    np.testing.assert_allclose(ours.weight_hh.grad.numpy(), ref.weight_hh_l0.grad.numpy().T, **TOL)
    np.testing.assert_allclose(ours.bias.grad.numpy(), ref.bias_ih_l0.grad.numpy(), **TOL)


def test_sequence_cross_entropy_matches_torch():
    logits = _randn(3, 5, 7)
    targets = np.random.default_rng(1).integers(0, 7, (3, 5))
    tl = torch.tensor(logits, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(
        tl.reshape(15, 7), torch.tensor(targets).reshape(15), label_smoothing=0.1
    )
    expected.backward()
    ol = Tensor(logits, requires_grad=True)
    loss = nn.sequence_cross_entropy(ol, targets, label_smoothing=0.1)
    loss.backward()
    np.testing.assert_allclose(loss.item(), expected.item(), **TOL)
    np.testing.assert_allclose(ol.grad.numpy(), tl.grad.numpy(), **TOL)
