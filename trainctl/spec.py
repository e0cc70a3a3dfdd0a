"""Typed arguments of the named things a config refers to (layers, data sets, optimizers...).

Each registry entry declares its arguments as `Arg`s. The config loader checks user values
against them (with the file, line and key path in the message) and the README's config
reference is generated from them, so the two never drift apart. `Arg.check` returns the
value converted to its Python type, or raises `ArgError` saying what was expected and what
was found.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

# PyYAML follows YAML 1.1, where `1e-3` (no dot) is a string, not a float. Numbers written
# that way are accepted wherever a number is expected.
_NUMBER_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class ArgError(ValueError):
    """A value that does not fit its Arg: `expected` and `found` are both short phrases."""

    def __init__(self, expected: str, found: Any) -> None:
        self.expected, self.found = expected, found
        super().__init__(f"expected {expected}, found {describe(found)}")


def describe(value: Any) -> str:
    """A value as a user wrote it, for 'found ...' in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Arg:
    """One argument: its kind, default and allowed range.

    kind: "int", "float", "bool", "str", "ints" (list of ints), "floats" (list of numbers),
    "float_or_floats" (a number or a list of numbers, e.g. per-channel means), "int_or_auto"
    (the string auto or an integer, e.g. a thread count), "strs" (a list of strings, may be
    empty, e.g. column names), "path" (a file path: the config loader reads a relative one
    from the config's folder, as it reads data.path). `length`
    fixes how many items a list holds; `choices` may be strings or integers.
    """

    kind: str
    default: Any = REQUIRED
    help: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str | int, ...] | None = None
    nullable: bool = False
    length: int | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def expected(self) -> str:
        """What a valid value looks like, as a phrase: 'an integer >= 1', 'one of a, b'."""
        if self.choices is not None:
            text = "one of " + ", ".join(map(str, self.choices))
        elif self.length is not None:
            item = "integers" if self.kind == "ints" else "numbers"
            text = f"a list of {self.length} {item}{self._range()}"
        else:
            text = _KIND_PHRASES[self.kind] + self._range()
        return text + (" or null" if self.nullable else "")

    def _range(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f" in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f" {'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f" {'<' if self.high_open else '<='} {_num(self.high)}"
        return ""

    def check(self, value: Any) -> Any:
        """`value` converted to this argument's type; ArgError when it does not fit."""
        if value is None and self.nullable:
            return None
        if self.kind in ("ints", "floats"):
            return self._check_list(value)
        if self.kind == "strs":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ArgError(self.expected(), value)
            return list(value)
        if self.kind == "float_or_floats":
            bounds = {"low": self.low, "high": self.high, "low_open": self.low_open,
                      "high_open": self.high_open}  # fmt: skip
            if isinstance(value, list):
                return Arg("floats", **bounds)._check_list(value)
            return Arg("float", **bounds).check(value)
        if self.kind == "int_or_auto":
            if value == "auto":
                return value
            try:
                return Arg("int", low=self.low, high=self.high).check(value)
            except ArgError:
                raise ArgError(self.expected(), value) from None
        converted = _CONVERTERS[self.kind](value)
        if converted is _BAD:
            raise ArgError(self.expected(), value)
        if self.choices is not None and converted not in self.choices:
            raise ArgError(self.expected(), value)
        if not self._in_range(converted):
            raise ArgError(self.expected(), value)
        return converted

    def _check_list(self, value: Any) -> list:
        item = Arg(
            "int" if self.kind == "ints" else "float",
            low=self.low, high=self.high, low_open=self.low_open, high_open=self.high_open,
        )  # fmt: skip
        if not isinstance(value, list) or not value:
            raise ArgError(self.expected(), value)
        if self.length is not None and len(value) != self.length:
            raise ArgError(self.expected(), value)
        try:
            return [item.check(v) for v in value]
        except ArgError:
            raise ArgError(self.expected(), value) from None

    def _in_range(self, number: Any) -> bool:
        if self.kind not in ("int", "float"):
            return True
        if self.low is not None and (number <= self.low if self.low_open else number < self.low):
            return False
        return not (
            self.high is not None
            and (number >= self.high if self.high_open else number > self.high)
        )


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


_KIND_PHRASES = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "ints": "a non-empty list of integers",
    "floats": "a non-empty list of numbers",
    "float_or_floats": "a number or a list of numbers",
    "int_or_auto": "auto or an integer",
    "strs": "a list of strings",
    "path": "a file path",
}

_BAD = object()


def _to_int(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        return _BAD
    return value


def _to_float(value: Any) -> Any:
    if isinstance(value, str) and _NUMBER_TEXT.match(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _BAD
    value = float(value)
    return value if math.isfinite(value) else _BAD


def _to_bool(value: Any) -> Any:
    return value if isinstance(value, bool) else _BAD


def _to_str(value: Any) -> Any:
    return value if isinstance(value, str) else _BAD


_CONVERTERS = {"int": _to_int, "float": _to_float, "bool": _to_bool, "str": _to_str,
               "path": _to_str}  # fmt: skip


@dataclass(frozen=True)
class Entry:
    """A named thing a config can ask for: its arguments and a one-line description."""

    name: str
    args: dict[str, Arg] = field(default_factory=dict)
    help: str = ""


def resolve_args(entry: Entry, given: Mapping[str, Any]) -> dict[str, Any]:
    """Every argument of `entry`, given or default, checked (programmatic use, no file context).

    Raises ArgError for the first bad value, KeyError for an unknown or missing name.
    """
    unknown = [key for key in given if key not in entry.args]
    if unknown:
        raise KeyError(f"{entry.name} takes no argument {unknown[0]!r}")
    resolved = {}
    for name, arg in entry.args.items():
        if name in given:
            resolved[name] = arg.check(given[name])
        elif arg.required:
            raise KeyError(f"{entry.name} needs the argument {name!r}")
        else:
            resolved[name] = arg.default
    return resolved
