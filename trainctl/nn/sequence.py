"""Sequence layers: self-attention, the transformer block, learned positions and the LSTM.

Inputs are (B, T, D): batch, time, features. Everything is composed of the primitives in
`autograd.ops`, so graph mode traces the same code: the LSTM's Python loop over time is
unrolled into the graph, one trace per sequence length (the step's signature cache).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from trainctl import backend
from trainctl.autograd import ops
from trainctl.autograd.tensor import Tensor
from trainctl.nn import functional as F
from trainctl.nn.decoding import active_decoding
from trainctl.nn.init import normal, uniform
from trainctl.nn.layers import LayerNorm, Linear, _check
from trainctl.nn.module import Module, Parameter

Operand = ops.Operand


@functools.lru_cache(maxsize=64)
def causal_mask(queries: int, keys: int, device: backend.Device) -> Tensor:
    """(queries, keys) booleans, True where a query may attend to a key: the queries are
    the last positions of the keys' (all of them in a full forward), each seeing itself and
    the ones before it.

    Built once per shape and device and shared by every attention layer and every forward:
    a constant, so graph mode captures the one tensor as one constant of the graph."""
    return Tensor(np.tri(queries, keys, keys - queries, dtype=bool), device=device)


def attention(q: Operand, k: Operand, v: Operand, causal: bool) -> Operand:
    """softmax(q k^T / sqrt(d)) v over (..., T, d) operands (k and v may hold earlier
    positions too); masked scores get the dtype's lowest finite value rather than -inf, so
    nothing non-finite appears in the step."""
    scores = (q @ ops.swapaxes(k, -1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        lowest = float(np.finfo(scores.dtype).min)
        mask = causal_mask(scores.shape[-2], scores.shape[-1], scores.device)
        scores = ops.where(mask, scores, lowest)
    return ops.softmax(scores, -1) @ v


def _with_earlier(layer: Module, k: Operand, v: Operand) -> tuple[Operand, Operand]:
    """The keys and values of the positions before these too, while decoding (a KV cache);
    `k` and `v` themselves otherwise."""
    state = active_decoding()
    if state is None:
        return k, v
    if not layer.causal:
        raise ValueError("attention: only a causal one can be decoded a few positions at a time")
    earlier = state.memory.get(id(layer))
    if earlier is not None:
        k, v = (
            ops.concatenate([old, new], axis=2) for old, new in zip(earlier, (k, v), strict=True)
        )
    state.memory[id(layer)] = (k, v)
    return k, v


class MultiHeadSelfAttention(Module):
    """Multi-head self-attention over (B, T, dim), one fused q/k/v projection.

    `qkv.weight` is (dim, 3 dim): columns [0, dim) give the queries, then keys, then values,
    each split into `heads` consecutive groups (PyTorch's `in_proj_weight`, transposed).
    While decoding (`nn.decoding`) a causal one keeps the keys and values of the positions
    it has seen and attends over them too.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        causal: bool = False,
        generator: backend.Generator | None = None,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention: {heads} heads do not divide the {dim} features")
        self.dim, self.heads, self.causal = dim, heads, causal
        self.qkv = Linear(dim, 3 * dim, generator=generator)
        self.proj = Linear(dim, dim, generator=generator)

    def forward(self, x: Operand) -> Operand:
        _check(self, x, x.ndim == 3 and x.shape[-1] == self.dim, f"(B, T, {self.dim})")
        b, t, d = x.shape
        heads = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads)
        q, k, v = (heads[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, H, T, d/H)
        q, k, v = (self.full_precision(a) for a in (q, k, v))  # the softmax in float32
        k, v = _with_earlier(self, k, v)
        mixed = attention(q, k, v, self.causal)
        return self.proj(self.autocast(mixed).transpose(0, 2, 1, 3).reshape(b, t, d))

    def extra_repr(self) -> str:
        return f"{self.dim}, heads={self.heads}, causal={self.causal}"


class TransformerBlock(Module):
    """Pre-norm transformer block: x + attn(ln(x)), then + mlp(ln(x)) with a GELU MLP of
    `mlp_ratio * dim` hidden units (GPT-2's layout)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: int = 4,
        causal: bool = False,
        generator: backend.Generator | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, heads, causal, generator)
        self.norm2 = LayerNorm(dim)
        self.fc1 = Linear(dim, mlp_ratio * dim, generator=generator)
        self.fc2 = Linear(mlp_ratio * dim, dim, generator=generator)

    def forward(self, x: Operand) -> Operand:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class PositionalEmbedding(Module):
    """Adds a learned vector per position to (B, T, dim) inputs, T <= max_len.

    The table starts at N(0, 0.02^2), as in GPT-2."""

    def __init__(self, max_len: int, dim: int, generator: backend.Generator | None = None) -> None:
        super().__init__()
        self.max_len, self.dim = max_len, dim
        self.weight = Parameter(normal((max_len, dim), 0.02, generator))

    def forward(self, x: Operand) -> Operand:
        state = active_decoding()
        start = 0 if state is None else state.position  # decoding: the new positions' rows
        ok = x.ndim == 3 and start + x.shape[1] <= self.max_len and x.shape[2] == self.dim
        _check(self, x, ok, f"(B, T <= {self.max_len - start}, {self.dim})")
        return x + self.autocast(self.weight[start : start + x.shape[1]])

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, dim={self.dim}"


class LSTM(Module):
    """One LSTM layer over (B, T, input_size) -> the hidden states (B, T, hidden_size).

    Gates in PyTorch's order (input, forget, cell, output); `weight_ih` is (input_size,
    4 hidden), `weight_hh` (hidden, 4 hidden), one bias (PyTorch's two biases added), all
    from U(-1/sqrt(hidden), 1/sqrt(hidden)) as in PyTorch. The state starts at zero. The
    loop over time is plain Python: eager runs it step by step, graph mode unrolls it.
    While decoding (`nn.decoding`) it starts from the state its last call ended in.
    """

    def __init__(
        self, input_size: int, hidden_size: int, generator: backend.Generator | None = None
    ) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        bound = 1.0 / math.sqrt(hidden_size)
        self.weight_ih = Parameter(uniform((input_size, 4 * hidden_size), bound, generator))
        self.weight_hh = Parameter(uniform((hidden_size, 4 * hidden_size), bound, generator))
        self.bias = Parameter(uniform((4 * hidden_size,), bound, generator))

    def forward(self, x: Operand) -> Operand:
        ok = x.ndim == 3 and x.shape[-1] == self.input_size
        _check(self, x, ok, f"(B, T, {self.input_size})")
        x = self.autocast(x)
        w_ih, w_hh, bias = (self.autocast(w) for w in (self.weight_ih, self.weight_hh, self.bias))
        b, n = x.shape[0], self.hidden_size
        decoding = active_decoding()
        h, c = (None, None) if decoding is None else decoding.memory.get(id(self), (None, None))
        states = []
        for t in range(x.shape[1]):
            gates = x[:, t] @ w_ih + bias
            if h is not None:
                gates = gates + h @ w_hh
            i, f = ops.sigmoid(gates[:, :n]), ops.sigmoid(gates[:, n : 2 * n])
            g, o = ops.tanh(gates[:, 2 * n : 3 * n]), ops.sigmoid(gates[:, 3 * n :])
            c = i * g if c is None else f * c + i * g
            h = o * ops.tanh(c)
            states.append(h.reshape(b, 1, n))
        if decoding is not None:  # the next call goes on from here
            decoding.memory[id(self)] = (h, c)
        return ops.concatenate(states, axis=1)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"
