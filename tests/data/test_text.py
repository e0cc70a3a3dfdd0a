"""The text data set: windows of characters as token ids, held out by position, the
vocabulary from the training part only."""

import gzip

import numpy as np
import pytest

from trainctl.data import load_splits
from trainctl.data.text import UNKNOWN, encode, vocabulary_of
from trainctl.errors import DataError

# 9 windows of 4 + 1 characters: 6 to train on (characters 0 to 24), 2 to validate, 1 to
# test; "z" and "!" appear only in the held-out tail
TEXT = "abc" * 8 + "ccbaz!ab" + "cabc" + "a"


def _splits(tmp_path, text=TEXT, name="t.txt", seq_len=4, val=0.2, test=0.1):
    path = tmp_path / name
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return load_splits("text", {"seq_len": seq_len}, str(path), val, test, seed=0)


def _decode(tokens, vocabulary):
    return "".join(vocabulary[t] for t in tokens)


def test_windows_are_consecutive_with_targets_shifted_by_one(tmp_path):
    splits = _splits(tmp_path)
    names = splits.class_names
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [6, 2, 1]
    windows = [splits.train, splits.val, splits.test]
    inputs = np.concatenate([w.inputs for w in windows])
    targets = np.concatenate([w.targets for w in windows])
    assert inputs.dtype == targets.dtype == np.int64 and inputs.shape == (9, 4)
    text = _decode(inputs.reshape(-1), names)
    assert text == TEXT[:36].replace("z", UNKNOWN).replace("!", UNKNOWN)
    np.testing.assert_array_equal(targets[:, :-1], inputs[:, 1:])
    np.testing.assert_array_equal(targets[:-1, -1], inputs[1:, 0])


def test_the_vocabulary_comes_from_the_training_part_alone(tmp_path):
    splits = _splits(tmp_path, name="t.txt.gz")
    assert splits.class_names == (UNKNOWN, "a", "b", "c")
    assert splits.num_classes == 4 and splits.train.num_classes == 4
    assert _decode(splits.val.inputs[0], splits.class_names) == "ccba"
    assert splits.val.targets[0, -1] == 0  # "z" was never seen in training: unknown
    assert splits.task == "classification" and splits.input_shape == (4,)


def test_the_split_ignores_the_seed_and_a_fraction_of_zero_holds_nothing_out(tmp_path):
    splits = _splits(tmp_path, val=0.0, test=0.0)
    assert splits.val is None and splits.test is None and len(splits.train) == 9
    assert "z" in splits.class_names


def test_encode_maps_unseen_characters_to_token_zero():
    vocabulary = vocabulary_of("héllo")
    assert vocabulary == (UNKNOWN, "h", "l", "o", "é")
    np.testing.assert_array_equal(encode("hé?o", vocabulary), [1, 4, 0, 3])
    np.testing.assert_array_equal(encode("ab", (UNKNOWN,)), [0, 0])


@pytest.mark.parametrize(
    "content, name, message",
    [
        (b"\xff\xfe not utf-8", "bad.txt", r"bad.txt: not UTF-8 text \(byte 0"),
        (b"not gzip at all", "bad.txt.gz", "bad.txt.gz: cannot read the text"),
        (b"abcdefg", "short.txt", r"7 characters make 1 window\(s\) of seq_len 4"),
    ],
)
def test_unreadable_or_short_texts_are_data_errors(tmp_path, content, name, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_splits("text", {"seq_len": 4}, str(tmp_path / name), 0.2, 0.1, seed=0)


def test_the_text_data_set_needs_a_path():
    with pytest.raises(DataError, match="data set 'text' needs a path"):
        load_splits("text", {}, None, 0.1, 0.0, seed=0)


def test_the_shipped_text_loads(tmp_path):
    from pathlib import Path

    path = Path(__file__).parents[2] / "datasets" / "genesis.txt.gz"
    splits = load_splits("text", {"seq_len": 64}, str(path), 0.05, 0.05, seed=0)
    assert splits.num_classes == 61 and splits.class_names[1:3] == ("\n", " ")
    assert _decode(splits.train.inputs[0], splits.class_names).startswith("In the beginning God")


def test_a_stored_vocabulary_is_reused_not_refitted(tmp_path):
    """A run's preprocessing.json decides the tokens when eval, resume or sample reload."""
    assert _splits(tmp_path).preprocessing == {"vocabulary": UNKNOWN + "abc"}
    path = str(tmp_path / "t.txt")
    stored = {"vocabulary": UNKNOWN + "ab"}
    again = load_splits("text", {"seq_len": 4}, path, 0.2, 0.1, seed=0, preprocessing=stored)
    assert again.class_names == (UNKNOWN, "a", "b") and again.num_classes == 3
    assert _decode(again.train.inputs[0], again.class_names) == "ab" + UNKNOWN + "a"
    with pytest.raises(DataError, match="preprocessing.json has no text vocabulary"):
        load_splits("text", {"seq_len": 4}, path, 0.2, 0.1, seed=0, preprocessing={"x": 1})
