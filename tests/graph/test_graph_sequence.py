"""Graph mode against eager mode, bit for bit, on the sequence layers and the sequence loss:
token embedding, learned positions, (causal) attention, transformer blocks and the LSTM,
whose Python loop over time graph mode unrolls, one trace per sequence length."""

import numpy as np
import pytest
from graph_helpers import run_mode

from trainctl import nn, optim
from trainctl.backend import CPU
from trainctl.nn.sequence import causal_mask

VOCAB, DIM = 7, 8


def _adam(params):
    return optim.Adam(params, lr=0.01)


def _language_model(body):
    def build():
        return nn.Sequential(
            nn.Embedding(VOCAB, DIM), nn.PositionalEmbedding(6, DIM), *body(), nn.Linear(DIM, VOCAB)
        )

    return build


MODELS = {
    "attention": _language_model(lambda: [nn.MultiHeadSelfAttention(DIM, 2)]),
    "attention_causal": _language_model(lambda: [nn.MultiHeadSelfAttention(DIM, 2, causal=True)]),
    "transformer": _language_model(
        lambda: [nn.TransformerBlock(DIM, 2, causal=True), nn.TransformerBlock(DIM, 4, 2)]
    ),
    "lstm": _language_model(lambda: [nn.LSTM(DIM, 5), nn.Linear(5, DIM)]),
}


def _token_batches(lengths, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (rng.integers(0, VOCAB, (batch, t)), rng.integers(0, VOCAB, (batch, t))) for t in lengths
    ]


def _assert_identical(eager, graph):
    np.testing.assert_array_equal(graph.losses, eager.losses)
    assert graph.params.keys() == eager.params.keys()
    for name, value in eager.params.items():
        np.testing.assert_array_equal(graph.params[name], value, err_msg=name)
    np.testing.assert_array_equal(graph.outputs, eager.outputs)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sequence_models_agree_bit_for_bit(name):
    batches = _token_batches([5]) * 3  # one batch, three steps: the loss must fall
    runs = [
        run_mode(mode, MODELS[name], _adam, nn.sequence_cross_entropy, batches)
        for mode in ("eager", "graph")
    ]
    _assert_identical(*runs)
    assert runs[0].losses[-1] < runs[0].losses[0]


def test_lstm_graph_unrolls_once_per_sequence_length():
    """Two lengths, two traces; back at the first length, no third."""
    batches = _token_batches([4, 6, 4, 6])
    eager = run_mode("eager", MODELS["lstm"], _adam, nn.sequence_cross_entropy, batches)
    graph = run_mode("graph", MODELS["lstm"], _adam, nn.sequence_cross_entropy, batches)
    _assert_identical(eager, graph)
    assert graph.step.stats()["traces"] == 3  # two training signatures and one evaluation


def test_the_causal_mask_is_built_once_and_is_one_constant_of_the_graph():
    """Two causal blocks share the mask of their length: one tensor per (length, device),
    captured as a single constant, and the steps still agree bit for bit."""
    assert causal_mask(5, 5, CPU) is causal_mask(5, 5, CPU)
    assert causal_mask(6, 6, CPU) is not causal_mask(5, 5, CPU)
    two_causal = _language_model(
        lambda: [nn.TransformerBlock(DIM, 2, causal=True), nn.TransformerBlock(DIM, 4, causal=True)]
    )
    batches = _token_batches([5]) * 2
    eager = run_mode("eager", two_causal, _adam, nn.sequence_cross_entropy, batches)
    graph = run_mode("graph", two_causal, _adam, nn.sequence_cross_entropy, batches)
    _assert_identical(eager, graph)
    traced_step = graph.step.traced
    traced = traced_step.trace(traced_step.signature("eval", batches[0][0]))[0]
    masks = [c for c in traced.constants if c.dtype == np.bool_]
    assert len(masks) == 1 and masks[0].shape == (5, 5)
    np.testing.assert_array_equal(masks[0].array, np.tri(5, dtype=bool))
