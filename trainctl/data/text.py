"""Character-level text: windows of a UTF-8 file as token ids, split by position.

The samples are consecutive windows of seq_len + 1 characters: the first seq_len are the
inputs, the last seq_len the targets (the inputs shifted by one, for next-token
prediction). Windows follow each other in the text, so a random split would train on
the neighbours of every held-out window: the held-out windows are the last ones instead
(validation, then test at the very end) and training gets the first part.

The vocabulary is the sorted set of characters of the training part alone; token 0 stands
for any character it lacks (shown as U+FFFD). It becomes the run's class names (saved in
summary.json), which `trainctl sample` turns text into tokens and back with.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from trainctl.data.dataset import ArrayDataset, DatasetEntry, Loaded
from trainctl.data.splits import carve_count
from trainctl.errors import DataError
from trainctl.spec import Arg

UNKNOWN = "\ufffd"


def read_text(path: Path) -> str:
    """The file's text: UTF-8, gunzipped first when the name ends in .gz."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read the text: {exc}") from None


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def vocabulary_of(text: str) -> tuple[str, ...]:
    """The unknown token, then the sorted distinct characters of `text`."""
    return (UNKNOWN, *sorted(set(text) - {UNKNOWN}))


def encode(text: str, vocabulary: tuple[str, ...]) -> np.ndarray:
    """int64 token ids of `text`; characters outside the vocabulary become 0."""
    known = _code_points("".join(vocabulary[1:]))
    codes = _code_points(text)
    position = np.minimum(np.searchsorted(known, codes), max(len(known) - 1, 0))
    hits = known[position] == codes if len(known) else np.zeros(len(codes), bool)
    return np.where(hits, position + 1, 0).astype(np.int64)


def _windows(tokens: np.ndarray, seq_len: int, first: int, stop: int, classes: int):
    starts = np.arange(first, stop)[:, None] * seq_len
    windows = tokens[starts + np.arange(seq_len + 1)]
    return ArrayDataset(windows[:, :-1], windows[:, 1:], "classification", classes)


def load_in_order(
    options: dict[str, Any], path: Path, val_split: float, test_split: float
) -> Loaded:
    """Train, validation and test windows of the text at `path`, held-out ones last."""
    seq_len = options["seq_len"]
    text = read_text(path)
    count = (len(text) - 1) // seq_len
    n_test, n_val = carve_count(count, test_split), carve_count(count, val_split)
    n_train = count - n_test - n_val
    if n_train < 1:
        raise DataError(
            f"{path}: {len(text)} characters make {count} window(s) of seq_len {seq_len} + 1; "
            f"val_split {val_split:g} ({n_val}) and test_split {test_split:g} ({n_test}) "
            "leave none to train on"
        )
    vocabulary = vocabulary_of(text[: n_train * seq_len + 1])
    tokens = encode(text, vocabulary)
    classes = len(vocabulary)
    bounds = (0, n_train, n_train + n_val, count)
    train, val, test = (
        _windows(tokens, seq_len, start, stop, classes) if stop > start else None
        for start, stop in zip(bounds[:-1], bounds[1:], strict=False)
    )
    return Loaded(train, test, str(path), val, class_names=vocabulary)


ENTRY = DatasetEntry(
    name="text",
    help=(
        "characters of a UTF-8 text file (.txt, or .txt.gz): windows of seq_len token ids, "
        "targets shifted by one; held out by position (validation, then test, at the end); "
        "the vocabulary comes from the training part"
    ),
    args={"seq_len": Arg("int", 64, "characters per sample (the model's context)", low=1)},
    load_in_order=load_in_order,
    needs_path=True,
    obtain="datasets/genesis.txt.gz in a source checkout (KJV Genesis, public domain)",
)
