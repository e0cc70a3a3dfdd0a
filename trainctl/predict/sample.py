"""`trainctl sample RUN --prompt TEXT --tokens N`: text from a character language model.

The run's vocabulary is the one it saved (the characters of its training text: its
preprocessing.json and class names); no data is read. Each new character is drawn from the
model's distribution at the last position of the context, at a temperature, with a seeded
generator. The model always sees a full window of the run's sequence length, so graph mode
compiles one forward: a context shorter than that is padded after its end, which a causal
model (causal attention, LSTM) never looks at; a longer one keeps its last seq_len
characters.
"""

from __future__ import annotations

import numpy as np

from trainctl.predict.model import InputError, Predictor


def run_vocabulary(predictor: Predictor) -> tuple[str, ...]:
    """The characters the run's tokens stand for, as the run saved them; an InputError for a
    run that is not a language model."""
    names = predictor.input.class_names
    output_shape = predictor.input.output_shape
    language_model = predictor.loss == "sequence_cross_entropy" and len(output_shape) == 2
    if not language_model or names is None or len(names) != output_shape[-1]:
        raise InputError(
            f"run {predictor.run.path} is not a character language model (expected a run "
            "trained on the text data set with sequence_cross_entropy)"
        )
    return tuple(names)


def encode_prompt(prompt: str, vocabulary: tuple[str, ...]) -> list[int]:
    """Token ids of `prompt`; an InputError naming the first character the run never saw."""
    index = {char: token for token, char in enumerate(vocabulary) if token}
    if not prompt:
        raise InputError("--prompt: expected at least one character to start from")
    for position, char in enumerate(prompt):
        if char not in index:
            raise InputError(
                f"--prompt: character {char!r} (U+{ord(char):04X}) at position {position} is "
                f"not in the run's vocabulary of {len(index)} characters from its training text"
            )
    return [index[char] for char in prompt]


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
    vocabulary = run_vocabulary(predictor)
    context = encode_prompt(prompt, vocabulary)
    window = predictor.input.shape[0]
    rng = np.random.default_rng(seed)
    written = []
    for _ in range(tokens):
        recent = context[-window:]
        batch = np.zeros((1, window), np.int64)
        batch[0, : len(recent)] = recent
        logits = predictor.predict(batch)[0, len(recent) - 1]
        token = next_token(logits, temperature, rng)
        context.append(token)
        written.append(vocabulary[token])
    return prompt + "".join(written)
