"""Character-level text: windows of a UTF-8 file as token ids, split by position.

The samples are consecutive windows of seq_len + 1 characters: the first seq_len are the
inputs, the last seq_len the targets (the inputs shifted by one, for next-token
prediction). Windows follow each other in the text, so a random split would train on
the neighbours of every held-out window: the held-out windows are the last ones instead
(validation, then test at the very end) and training gets the first part.

The vocabulary is the sorted set of characters of the training part alone; token 0 stands
for any character it lacks (shown as U+FFFD). The run stores it (preprocessing.json, and as
its class names), and `eval`, `train --resume` and `trainctl sample` encode with the stored
one, never a refit.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from trainctl.data.dataset import ArrayDataset, DatasetEntry, DataSplits, Loaded
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


def _encode_codes(codes: np.ndarray, known: np.ndarray) -> np.ndarray:
    """int64 token ids of code points: 1 + the place in the sorted `known`, 0 if absent."""
    if not len(known):
        return np.zeros(codes.shape, np.int64)
    position = np.minimum(np.searchsorted(known, codes), len(known) - 1)
    return np.where(known[position] == codes, position + 1, 0).astype(np.int64)


def encode(text: str, vocabulary: tuple[str, ...]) -> np.ndarray:
    """int64 token ids of `text`; characters outside the vocabulary become 0."""
    return _encode_codes(_code_points(text), _code_points("".join(vocabulary[1:])))


def _windows(codes: np.ndarray, seq_len: int, first: int, stop: int) -> ArrayDataset:
    """Windows first..stop-1 as (inputs, targets) of Unicode code points, not yet tokens."""
    starts = np.arange(first, stop)[:, None] * seq_len
    windows = codes[starts + np.arange(seq_len + 1)]
    return ArrayDataset(windows[:, :-1], windows[:, 1:], "classification", None)


def load_in_order(
    options: dict[str, Any], path: Path, val_split: float, test_split: float
) -> Loaded:
    """Train, validation and test windows of the text at `path`, held-out ones last, as code
    points (`encode` makes them tokens)."""
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
    codes = _code_points(text)
    bounds = (0, n_train, n_train + n_val, count)
    train, val, test = (
        _windows(codes, seq_len, start, stop) if stop > start else None
        for start, stop in zip(bounds[:-1], bounds[1:], strict=False)
    )
    return Loaded(train, test, str(path), val)


def _characters(dataset: ArrayDataset) -> str:
    """Every character of a split's windows: its inputs and the last target."""
    codes = np.concatenate([dataset.inputs.reshape(-1), dataset.targets[-1:, -1]])
    return codes.astype("<u4").tobytes().decode("utf-32-le")


def _tokens(dataset: ArrayDataset | None, known: np.ndarray, classes: int):
    if dataset is None:
        return None
    inputs, targets = (_encode_codes(a, known) for a in (dataset.inputs, dataset.targets))
    return ArrayDataset(inputs, targets, "classification", classes)


def encode_splits(
    options: dict[str, Any], splits: DataSplits, stored: dict[str, Any] | None
) -> DataSplits:
    """Token ids for every split, with the vocabulary of the training split, or the one a run
    stored (its preprocessing.json) so that eval, resume and sample encode as it trained."""
    if stored is None:
        vocabulary = vocabulary_of(_characters(splits.train))
    else:
        vocabulary = stored.get("vocabulary")
        if not isinstance(vocabulary, str) or not vocabulary.startswith(UNKNOWN):
            raise DataError("the run's preprocessing.json has no text vocabulary")
        vocabulary = tuple(vocabulary)
    known = _code_points("".join(vocabulary[1:]))
    classes = len(vocabulary)
    return replace(
        splits,
        train=_tokens(splits.train, known, classes),
        val=_tokens(splits.val, known, classes),
        test=_tokens(splits.test, known, classes),
        class_names=vocabulary,
        preprocessing={"vocabulary": "".join(vocabulary)},
    )


ENTRY = DatasetEntry(
    name="text",
    help=(
        "characters of a UTF-8 text file (.txt, or .txt.gz): windows of seq_len token ids, "
        "targets shifted by one; held out by position (validation, then test, at the end); "
        "the vocabulary comes from the training part"
    ),
    args={"seq_len": Arg("int", 64, "characters per sample (the model's context)", low=1)},
    load_in_order=load_in_order,
    encode=encode_splits,
    needs_path=True,
    obtain="datasets/genesis.txt.gz in a source checkout (KJV Genesis, public domain)",
)
