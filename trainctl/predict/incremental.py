"""`sample` with a KV cache: each new character costs a forward over that one position, not
over the whole context again.

The run's model runs eagerly within `nn.decoding` (see there): the prompt once, then one
position per character, causal self-attention attending over the keys and values it kept
and the LSTM going on from its state. That is the full forward's arithmetic, position by
position, so the same characters come out (to float32 rounding of the logits). It holds
while the context fits the run's window: past it, the full forward keeps the last seq_len
characters, whose positions all shift by one each step, so from there every character is
the full forward again (`LanguageModel.next_logits`). A model with a layer this does not
know to be decodable (a Python model, a block DAG, a convolution...) always takes the full
forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from trainctl.autograd import Tensor, no_grad
from trainctl.autograd.step_graph import model_output
from trainctl.nn import layers, sequence
from trainctl.nn.decoding import DecodeState, decoding
from trainctl.nn.module import Module
from trainctl.predict.text import LanguageModel
from trainctl.train.step import host_to_device

# Layers whose output at a position depends on that position alone, or on earlier ones
# through `nn.decoding` (causal attention, checked apart; the LSTM), and containers of them.
_DECODABLE = frozenset({
    layers.Sequential, layers.Residual, layers.Linear, layers.LayerNorm, layers.Embedding,
    layers.Dropout, layers.ReLU, layers.LeakyReLU, layers.GELU, layers.Tanh, layers.Sigmoid,
    layers.SiLU, layers.Softplus, layers.ELU, sequence.PositionalEmbedding,
    sequence.TransformerBlock, sequence.LSTM,
})  # fmt: skip


def decodable(model: Module) -> bool:
    """Whether every layer of `model` is one `nn.decoding` runs position by position (by
    exact class: a subclass may compute something else)."""
    for module in model.modules():
        if type(module) is sequence.MultiHeadSelfAttention:
            if not module.causal:
                return False
        elif type(module) not in _DECODABLE:
            return False
    return True


class CachedLanguageModel:
    """`next_logits(context)` as `LanguageModel`'s, feeding the model only the tokens it has
    not seen yet while the context fits the window."""

    def __init__(self, model: LanguageModel) -> None:
        self.model = model
        components = model.predictor.restored.components
        self.module, self.device, self.dtype = components.model, components.device, components.dtype
        self.state = DecodeState()
        self.fed: list[int] = []  # the tokens `state` holds, from position 0

    def next_logits(self, context: Sequence[int]) -> np.ndarray:
        if len(context) > self.model.window:
            return self.model.next_logits(context)  # positions shift: the full forward
        if len(self.fed) >= len(context) or list(context[: len(self.fed)]) != self.fed:
            # not a continuation of what it has seen: start again
            self.state, self.fed = DecodeState(), []
        new = np.asarray(context[len(self.fed) :], np.int64)[None]
        x = Tensor._wrap(host_to_device(new, self.device, self.dtype), self.device)
        self.module.eval()
        with no_grad(), decoding(self.state):
            out = model_output(self.module, self.module(x), self.dtype)
        self.state.advance(new.shape[1])
        self.fed.extend(int(token) for token in new[0])
        return np.asarray(out.numpy()[0, -1], copy=True)


def next_logits_of(
    model: LanguageModel, cache: bool = True
) -> Callable[[Sequence[int]], np.ndarray]:
    """The function `sample` asks for the logits after a context: with `cache`, and where the
    model is decodable, a `CachedLanguageModel`'s; the full forward's otherwise."""
    if cache and decodable(model.predictor.restored.components.model):
        return CachedLanguageModel(model).next_logits
    return model.next_logits
