"""A character language model run (the text data set) as `sample`, `predict` and `serve`
use it: its stored vocabulary, text encoded with it, and the check that it is causal.

The vocabulary is the one the run saved (the characters of its training text, its class
names); nothing is refitted. A character outside it is an error rather than the unknown
token 0: no training window holds token 0 (the vocabulary is that text's characters), so
its embedding was never trained and what the model made of it would mean nothing.

Texts are fed as full windows of the run's sequence length, so graph mode compiles one
forward: a shorter text is padded after its end, which a causal model never looks at, and a
longer one keeps its last seq_len characters. That is sound only for a causal model, which
`language_model` checks by running it (see `_check_causal`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainctl.data.text import read_text
from trainctl.predict.model import InputError, Predictor
from trainctl.predict.output import output_scores, shortest

_CAUSAL_TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}  # float32 noise, far below any real leak


def is_text_run(predictor: Any) -> bool:
    return predictor.restored.config.data.dataset == "text"


@dataclass(frozen=True)
class LanguageModel:
    """A run checked to be a causal character language model; see `language_model`."""

    predictor: Predictor
    vocabulary: tuple[str, ...]  # by token id; token 0 is the unknown character

    @property
    def window(self) -> int:
        return self.predictor.input.shape[0]

    def encode(self, text: str, where: str) -> list[int]:
        """Token ids of `text`; an InputError at `where` naming the first character the run's
        vocabulary lacks."""
        index = {char: token for token, char in enumerate(self.vocabulary) if token}
        if not text:
            raise InputError(f"{where}: expected at least one character to start from")
        for position, char in enumerate(text):
            if char not in index:
                raise InputError(
                    f"{where}: character {char!r} (U+{ord(char):04X}) at position {position} is "
                    f"not in the run's vocabulary of {len(index)} characters from its training "
                    "text"
                )
        return [index[char] for char in text]

    def windows(self, contexts: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """(N, window) token ids, each context's last `window` tokens from position 0 and
        zeros after, and how many tokens each window holds."""
        batch = np.zeros((len(contexts), self.window), np.int64)
        lengths = np.zeros(len(contexts), np.int64)
        for row, context in enumerate(contexts):
            recent = list(context)[-self.window :]
            batch[row, : len(recent)] = recent
            lengths[row] = len(recent)
        return batch, lengths

    def next_logits(self, context: Sequence[int]) -> np.ndarray:
        """The (vocabulary,) logits of the character after `context`."""
        batch, lengths = self.windows([context])
        return self.predictor.predict(batch)[0, lengths[0] - 1]


def language_model(predictor: Predictor) -> LanguageModel:
    """`predictor` as a language model; an InputError (one line) for a run that is not a
    character language model, or whose model is not causal."""
    names = predictor.input.class_names
    output_shape = predictor.input.output_shape
    trained_on_text = predictor.loss == "sequence_cross_entropy" and len(output_shape) == 2
    if not trained_on_text or names is None or len(names) != output_shape[-1]:
        raise InputError(
            f"run {predictor.run.path} is not a character language model (expected a run "
            "trained on the text data set with sequence_cross_entropy)"
        )
    model = LanguageModel(predictor, tuple(names))
    _check_causal(model)
    return model


def _check_causal(model: LanguageModel) -> None:
    """An InputError unless the model's outputs at every position stay the same when the
    characters after it change, checked on random windows cut at three places (the first,
    the middle and the last position): a model that looks ahead (self-attention without a
    causal mask) cannot continue a text one character at a time."""
    window, size = model.window, len(model.vocabulary)
    rng = np.random.default_rng(0)
    base = rng.integers(1, size, (1, window))
    reference = model.predictor.predict(base)  # one batch size: one compiled forward
    for cut in sorted({1, window // 2, window - 1} - {0}):
        changed = base.copy()
        changed[0, cut:] = base[0, cut:] % (size - 1) + 1  # another character everywhere
        outputs = model.predictor.predict(changed)
        if not np.allclose(outputs[0, :cut], reference[0, :cut], **_CAUSAL_TOLERANCE):
            raise InputError(
                f"run {model.predictor.run.path} is not a causal language model: its outputs "
                f"at the first {cut} position(s) change with the characters after them (is a "
                "self_attention or transformer_block missing causal: true?); continuing a text "
                "needs a model that only looks back"
            )


def next_character_records(
    model: LanguageModel,
    outputs: np.ndarray,
    contexts: Sequence[Sequence[int]],
    samples: Sequence[Any],
    top_k: int = 1,
) -> list[dict[str, Any]]:
    """Per encoded text (its `windows` gave `outputs`, the model's logits): its likeliest
    next character and that character's probability ({"sample", "next", "probability"},
    plus "top_k", a list of k {"next", "probability"}, when k > 1; see `check_top_k`), and
    "perplexity", the model's on the text itself (its characters after the first, each given
    the ones before it, within its last window; null for one character)."""
    recent = [list(context)[-model.window :] for context in contexts]
    last = np.array([len(tokens) - 1 for tokens in recent])
    number = shortest(outputs.dtype)
    probabilities = output_scores(outputs[np.arange(len(last)), last], "cross_entropy")[0]
    best = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    records = []
    for row, sample in enumerate(samples):
        ranked = [
            {"next": model.vocabulary[token], "probability": number(probabilities[row, token])}
            for token in best[row]
        ]
        record = {"sample": sample, **ranked[0]}
        if top_k > 1:
            record["top_k"] = ranked
        perplexity = _perplexity(outputs[row], recent[row])
        record["perplexity"] = None if perplexity is None else number(perplexity)
        records.append(record)
    return records


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file, one text each (a final line break ends the last line,
    CRLF counts as one break); an InputError for an empty line, which has nothing to
    continue."""
    text = read_text(path)
    lines = text.split("\n")
    if not lines[-1]:  # after the last line break, or an empty file
        lines.pop()
    lines = [line.removesuffix("\r") for line in lines]
    if not lines:
        raise InputError(f"{path}: no lines of text to continue")
    for number, line in enumerate(lines, start=1):
        if not line:
            raise InputError(f"{path}:{number}: an empty line; expected a text per line")
    return lines


def encoded_lines(model: LanguageModel, path: Path) -> tuple[list[list[int]], list[int]]:
    """The token ids of each line of the text file `path`, and its line number (from 1)."""
    lines = read_lines(path)
    contexts = [model.encode(line, f"{path}:{n}") for n, line in enumerate(lines, start=1)]
    return contexts, list(range(1, len(lines) + 1))


def _perplexity(logits: np.ndarray, tokens: Sequence[int]) -> float | None:
    """exp of the mean negative log-likelihood of tokens[1:] given the ones before them."""
    if len(tokens) < 2:
        return None
    z = logits[: len(tokens) - 1].astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(np.exp(-log_p[np.arange(len(tokens) - 1), list(tokens[1:])].mean()))
