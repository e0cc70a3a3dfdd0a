"""Typed registry arguments: conversion, ranges and the phrases errors are made of."""

import pytest

from trainctl.spec import REQUIRED, Arg, ArgError, Entry, describe, resolve_args


@pytest.mark.parametrize(
    ("arg", "value", "expected"),
    [
        (Arg("int", low=1), 3, 3),
        (Arg("float"), 2, 2.0),
        (Arg("float"), "1e-3", 0.001),  # YAML 1.1 reads 1e-3 as a string
        (Arg("bool"), False, False),
        (Arg("str", choices=("a", "b")), "b", "b"),
        (Arg("ints"), [1, 2], [1, 2]),
        (Arg("floats"), [1, 2.5], [1.0, 2.5]),
        (Arg("float_or_floats"), 0.5, 0.5),
        (Arg("float_or_floats"), [0.1, 0.2], [0.1, 0.2]),
        (Arg("int", nullable=True), None, None),
        (Arg("int", choices=(1, 3)), 3, 3),
        (Arg("ints", low=1, length=2), [4, 5], [4, 5]),
        (Arg("strs"), ["color", "NA"], ["color", "NA"]),
        (Arg("strs"), [], []),
        (Arg("path", nullable=True), "data/test.csv", "data/test.csv"),
    ],
)
def test_valid_values_are_converted(arg, value, expected):
    result = arg.check(value)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    ("arg", "value", "phrase"),
    [
        (Arg("int", low=1), 0, "an integer >= 1"),
        (Arg("int"), 1.5, "an integer"),
        (Arg("int"), True, "an integer"),
        (Arg("float", low=0, high=1, high_open=True), 1.0, "a number in [0, 1)"),
        (Arg("float", low=0, low_open=True), 0, "a number > 0"),
        (Arg("float"), "abc", "a number"),
        (Arg("float"), float("nan"), "a number"),
        (Arg("bool"), "yes", "true or false"),
        (Arg("str", choices=("sgd", "adam")), "sdg", "one of sgd, adam"),
        (Arg("ints"), [], "a non-empty list of integers"),
        (Arg("floats"), [1, "x"], "a non-empty list of numbers"),
        (
            Arg("float_or_floats", low=0, low_open=True),
            [1.0, 0.0],
            "a non-empty list of numbers > 0",
        ),
        (Arg("float_or_floats", low=0, low_open=True), 0.0, "a number > 0"),
        (Arg("int"), None, "an integer"),
        (Arg("int", choices=(1, 3)), 2, "one of 1, 3"),
        (Arg("ints", low=1, length=2), [4], "a list of 2 integers >= 1"),
        (Arg("ints", low=1, length=2), [4, 5, 6], "a list of 2 integers >= 1"),
        (Arg("ints", low=1, length=2), [4, 0], "a list of 2 integers >= 1"),
        (Arg("strs"), "color", "a list of strings"),
        (Arg("strs"), ["color", 3], "a list of strings"),
        (Arg("path", nullable=True), 3, "a file path or null"),
    ],
)
def test_bad_values_say_what_was_expected(arg, value, phrase):
    with pytest.raises(ArgError) as caught:
        arg.check(value)
    assert caught.value.expected == phrase
    assert str(caught.value) == f"expected {phrase}, found {describe(value)}"


def test_describe_writes_values_as_yaml_does():
    assert describe(None) == "null"
    assert describe(True) == "true"
    assert describe({"a": 1}) == "a mapping"
    assert describe("x" * 100).endswith("...'")


def test_resolve_args_fills_defaults_and_rejects_unknown_or_missing():
    entry = Entry("thing", {"a": Arg("int"), "b": Arg("float", 0.5)})
    assert entry.args["a"].default is REQUIRED and entry.args["a"].required
    assert resolve_args(entry, {"a": 2}) == {"a": 2, "b": 0.5}
    with pytest.raises(KeyError, match="no argument 'c'"):
        resolve_args(entry, {"a": 1, "c": 2})
    with pytest.raises(KeyError, match="needs the argument 'a'"):
        resolve_args(entry, {})
