"""`trainctl sample RUN --prompt TEXT --tokens N`: text from a character language model.

The run's vocabulary is the one it saved; no data is read (see `predict/text.py`, which also
checks that the model is causal). Each new character is drawn from the model's
distribution after the context (the unknown token left out), at a temperature, with a
seeded generator, over the context's last seq_len characters.
"""

from __future__ import annotations

import numpy as np

from trainctl.predict.model import InputError, Predictor
from trainctl.predict.text import language_model


def next_token(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """A token drawn from softmax(logits / temperature); the likeliest one at temperature 0."""
    if temperature == 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    return int(rng.choice(len(p), p=p / p.sum()))


def sample_text(
    predictor: Predictor,
    prompt: str,
    tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
) -> str:
    """`prompt` followed by `tokens` characters the run's model writes, one at a time."""
    if tokens < 0:
        raise InputError(f"--tokens: expected a count >= 0, found {tokens}")
    if temperature < 0:
        raise InputError(f"--temperature: expected a number >= 0, found {temperature:g}")
    model = language_model(predictor)
    context = model.encode(prompt, "--prompt")
    start = len(context)
    rng = np.random.default_rng(seed)
    for _ in range(tokens):
        logits = model.next_logits(context)
        logits[0] = -np.inf  # the unknown token stands for no character: never written
        context.append(next_token(logits, temperature, rng))
    return prompt + "".join(model.vocabulary[token] for token in context[start:])
