"""Incremental decoding (`nn.decoding`): a causal model fed a few positions at a time, its
attention layers keeping their keys and values and its LSTM its state, gives the full
forward's outputs; what cannot be decoded that way is refused."""

import numpy as np
import pytest

from trainctl import nn
from trainctl.autograd import Tensor, no_grad
from trainctl.backend import Generator
from trainctl.errors import ShapeError
from trainctl.nn.decoding import DecodeState, active_decoding, decoding
from trainctl.predict.incremental import decodable

VOCAB, DIM, LENGTH = 9, 8, 7


def language_model(causal=True):
    g = Generator(0)
    return nn.Sequential(
        nn.Embedding(VOCAB, DIM),
        nn.PositionalEmbedding(LENGTH, DIM, generator=g),
        nn.TransformerBlock(DIM, 2, 2, causal=causal, generator=g),
        nn.MultiHeadSelfAttention(DIM, 4, causal=causal, generator=g),
        nn.LSTM(DIM, 6, generator=g),
        nn.LayerNorm(6),
        nn.Linear(6, VOCAB),
    ).to(dtype=np.float64)


def decoded(model, tokens, chunks):
    """The outputs for `tokens` (B, T), fed in chunks of the given lengths."""
    state, outputs, start = DecodeState(), [], 0
    with no_grad(), decoding(state):
        for length in chunks:
            outputs.append(model(Tensor(tokens[:, start : start + length])).numpy())
            state.advance(length)
            start += length
    return np.concatenate(outputs, axis=1)


@pytest.mark.parametrize("chunks", [[1] * LENGTH, [3, 1, 1, 2], [LENGTH]])
def test_decoding_a_few_positions_at_a_time_gives_the_full_forward(chunks):
    model = language_model()
    model.eval()
    tokens = np.random.default_rng(1).integers(0, VOCAB, (2, LENGTH))
    with no_grad():
        full = model(Tensor(tokens)).numpy()
    np.testing.assert_allclose(decoded(model, tokens, chunks), full, rtol=1e-12, atol=1e-12)
    assert active_decoding() is None  # left as it was


def test_without_the_cache_the_later_positions_would_differ():
    """The check above can fail: feeding each position alone, forgetting the earlier ones,
    is not the full forward."""
    model = language_model()
    model.eval()
    tokens = np.random.default_rng(2).integers(0, VOCAB, (1, LENGTH))
    with no_grad():
        full = model(Tensor(tokens)).numpy()
        forgetful = np.concatenate(
            [decoded(model, tokens[:, t:], [1]) for t in range(LENGTH)], axis=1
        )
    assert not np.allclose(forgetful[:, 1:], full[:, 1:], atol=1e-6)


def test_non_causal_attention_and_positions_past_the_table_are_refused():
    tokens = np.zeros((1, 2), np.int64)
    with pytest.raises(ValueError, match="only a causal one can be decoded"):
        decoded(language_model(causal=False), tokens, [2])
    model = language_model()
    state = DecodeState(position=LENGTH - 1)
    with no_grad(), decoding(state), pytest.raises(ShapeError, match="T <= 1"):
        model(Tensor(tokens))


def test_only_known_layers_by_exact_class_are_decodable():
    class Shuffled(nn.Sequential):  # a Python model: its forward could do anything
        pass

    assert decodable(language_model())
    assert not decodable(language_model(causal=False))
    assert not decodable(Shuffled(nn.Embedding(VOCAB, DIM), nn.Linear(DIM, VOCAB)))
    assert not decodable(nn.Sequential(nn.Embedding(VOCAB, DIM), nn.Softmax(axis=1)))
