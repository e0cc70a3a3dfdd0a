"""`trainctl sample RUN --prompt TEXT --tokens N`: text from a character language model.

The run's vocabulary is the one it saved; no data is read (see `predict/text.py`, which also
checks that the model is causal). Each new character is drawn from the model's
distribution after the context (the unknown token left out), at a temperature, with a
seeded generator, over the context's last seq_len characters.
"""

from __future__ import annotations

import numpy as np

from trainctl.predict.incremental import next_logits_of
from trainctl.predict.model import InputError, Predictor
from trainctl.predict.text import LanguageModel, language_model


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
    cache: bool = True,
) -> str:
    """`prompt` followed by `tokens` characters the run's model writes, one at a time; with
    `cache`, each one a forward over the new position alone where the model allows it (see
    `predict/incremental.py`), the same characters as without."""
    if tokens < 0:
        raise InputError(f"--tokens: expected a count >= 0, found {tokens}")
    if temperature < 0:
        raise InputError(f"--temperature: expected a number >= 0, found {temperature:g}")
    model = language_model(predictor)
    context = model.encode(prompt, "--prompt")
    written = generate(model, context, tokens, temperature, seed, cache)
    return prompt + "".join(model.vocabulary[token] for token in written)


def generate(
    model: LanguageModel,
    context: list[int],
    tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
    cache: bool = True,
) -> list[int]:
    """The `tokens` token ids `model` writes after `context`, drawn as `sample_text` draws."""
    context = list(context)
    next_logits = next_logits_of(model, cache)
    rng = np.random.default_rng(seed)
    for _ in range(tokens):
        logits = next_logits(context)
        logits[0] = -np.inf  # the unknown token stands for no character: never written
        context.append(next_token(logits, temperature, rng))
    return context[len(context) - tokens :]
