"""Hypothesis strategies for hostile config files, grown from the example configs in configs/.

`mutated_config` changes the parsed example configs (wrong types, unknown and misspelt keys,
huge and negative numbers, deep nesting, long strings, NUL and control characters) and
dumps them; `hostile_config_bytes` then damages the text (YAML tags, anchors and aliases,
merge keys, BOMs, tabs, non-UTF-8 bytes, NUL bytes, truncation, duplicated lines);
`garbage_bytes` is anything at all; `alias_bomb` is a "billion laughs" of random shape.

Tags that would run code or write files name MARKER, a relative path: a test running in an
empty folder checks that the file never appears.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import yaml
from hostile_helpers import CONFIGS, MARKER
from hypothesis import strategies as st

_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's is ten times faster
BASES = [yaml.safe_load(path.read_text()) for path in CONFIGS]
BASE_TEXTS = [path.read_text() for path in CONFIGS]

# Values that YAML reads as something a config may not expect.
# fmt: off
NAMES = ["linear", "lineer", "relu", "sgd", "SGD", "adam ", "cross_entropy", "digits", "npz",
         "accuracy", "cosine", "eager", "graph", "cuda", "float16", "", " ", "..", "../x",
         "/etc/passwd", "a/b", "name\n", "x" * 300, "ü", "\u202e", "\x00", "a\x00b",
         "\x1b[31mred", "${HOME}", "~", "null", "NaN", "1e-3", "0x10", "1_000"]
EXTREME_NUMBERS = [0, -1, -(2**63), 2**63, 2**64 + 1, 10**30, -(10**30), 10**300, 1e308,
                   -1e308, 5e-324, math.inf, -math.inf, math.nan, -0.0, 1.5, 1e-12]
KEYS = ["layers", "linear", "out", "lr", "name", "epochs", "max_steps", "batch_size", "path",
        "options", "transforms", "dataset", "model", "data", "train", "unknown", "Model",
        "batchsize", "lr ", "__class__", "a\nb", "x" * 200, "1", "<<", "?", "-"]
# fmt: on

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(EXTREME_NUMBERS),
    st.integers(-(10**40), 10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(NAMES),
    st.text(max_size=40),
)
# Long strings are a mutation of their own, not a leaf of every value: PyYAML scans them slowly.
long_strings = st.one_of(
    st.sampled_from(["a", "ü ", ": ", "a" * 99]).map(lambda text: text * 50),
    st.sampled_from(["\n", "\x00", "\t"]).map(lambda text: text * 1000),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYS), st.text(max_size=12)), children, max_size=4
        ),
    ),
    max_leaves=8,
)


def _nest(value: Any, depth: int, as_list: bool) -> Any:
    for _ in range(depth):
        value = [value] if as_list else {"deep": value}
    return value


def _slots(tree: Any) -> list[tuple[Any, Any]]:
    """(container, key or index) of every value in `tree`, the root's own slot first."""
    found: list[tuple[Any, Any]] = []
    stack = [tree]
    while stack:
        container = stack.pop()
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for key, value in items:
            found.append((container, key))
            if isinstance(value, (dict, list)) and value:
                stack.append(value)
    return found


@st.composite
def mutated_config(draw) -> str:
    """An example config with one to four values or keys changed, as YAML text."""
    doc = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 4))):
        slots = _slots(doc)
        container, key = draw(st.sampled_from(slots)) if slots else (doc, None)
        action = draw(
            st.sampled_from(["replace", "delete", "add", "nest", "rename", "retype", "long"])
        )
        if key is None or action == "add":
            target = container if isinstance(container, dict) else doc
            target[draw(st.one_of(st.sampled_from(KEYS), st.text(max_size=20)))] = draw(values)
        elif action == "replace":
            container[key] = draw(values)
        elif action == "long":
            container[key] = draw(long_strings)
        elif action == "delete":
            del container[key]
        elif action == "nest":
            depth = draw(st.sampled_from([1, 2, 5, 30, 99, 100, 101, 150]))
            container[key] = _nest(container[key], depth, draw(st.booleans()))
        elif action == "rename" and isinstance(container, dict):
            new = draw(st.sampled_from([key + "s", key.upper(), key[:-1], " " + key, key * 2]))
            container[new] = container.pop(key)
        elif action == "retype":
            old = container[key]
            container[key] = draw(st.sampled_from([str(old), [old], {"value": old}, None]))
    flow = draw(st.sampled_from([False, None, True]))
    return yaml.dump(
        doc,
        Dumper=_DUMPER,
        sort_keys=False,
        default_flow_style=flow,
        width=10**6,
        allow_unicode=draw(st.booleans()),
    )


def bomb_text(width: int, depth: int, kind: str) -> str:
    """A "billion laughs": each level repeats the previous one `width` times."""
    lines = ["model:", "  layers: [flatten, {linear: {out: 10}}]", 'l0: &l0 ["lol"]']
    for level in range(1, depth + 1):
        refs = ", ".join([f"*l{level - 1}"] * width)
        if kind == "merge":
            keys = ", ".join(f"k{level}_{i}: *l{level - 1}" for i in range(width))
            lines.append(f"l{level}: &l{level} {{{keys}}}")
        elif kind == "merge_keys":
            previous = f"*l{level - 1}" if level > 1 else "{a: 1}"
            keys = ", ".join([previous] * width) if level > 1 else previous
            lines.append(f"l{level}: &l{level} {{<<: [{keys}], own{level}: 1}}")
        else:
            lines.append(f"l{level}: &l{level} [{refs}]")
    return "\n".join(lines) + "\n"


@st.composite
def alias_bomb(draw) -> tuple[str, int]:
    """(text, how many values the last level expands to)."""
    width, depth = draw(st.integers(2, 12)), draw(st.integers(1, 12))
    kind = draw(st.sampled_from(["list", "merge", "merge_keys"]))
    return bomb_text(width, depth, kind), width**depth


TAGS = [
    f'!!python/object/apply:os.system ["touch {MARKER}"]',
    f'!!python/object/apply:subprocess.check_call [["touch", "{MARKER}"]]',
    f'!!python/object/new:builtins.open ["{MARKER}", "w"]',
    f'!!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path ["{MARKER}"]]',
    f'!<tag:yaml.org,2002:python/object/apply:os.system> ["touch {MARKER}"]',
    "!!python/object:collections.OrderedDict {a: 1}",
    "!!python/name:os.system",
    "!!python/module:os",
    "!!python/tuple [1, 2]",
    "!!binary aGVsbG8=",
    "!!binary '%%%'",
    "!!timestamp 2001-12-14t21:59:43.10-05:00",
    "!!timestamp 2020-99-99",
    "!!set {a, b}",
    "!!omap [a: 1, b: 2]",
    "!!pairs [a: 1]",
    "!!float abc",
    "!!int 0xZZ",
    "!!bool maybe",
    "!!null ''",
    "!!str 12",
    "!!map [1, 2]",
    "!!seq {a: 1}",
    "!custom {a: 1}",
    "!local 1",
    "!!merge 1",
    "!!value 1",
]
# Deep flow nesting costs PyYAML's scanner (n ** 2) for n up to 1024 before the depth bound
# stops it: the snippets go just past the bound.
SNIPPETS = [
    *(f"hostile: {tag}" for tag in TAGS),
    "a: &a [1, 2]",
    "b: *a",
    "c: *undefined",
    "<<: *a",
    "<<: {seed: 1}",
    "<<: [1, 2]",
    "loop: &loop [*loop]",
    "selfmerge: &sm {<<: *sm}",
    "%YAML 1.1",
    "%TAG !e! tag:example.com,2000:",
    "---",
    "...",
    "? [complex, key]\n: value",
    "? {a: 1}\n: value",
    "[1, 2]: value",
    "null: 1",
    "1: one",
    "true: yes",
    "{[",
    '"unterminated',
    "key: 'single",
    "- item at the wrong level",
    "block: |\n  text\n    more",
    "folded: >-\n  text",
    "key: value: another",
    "key:: double",
    "\t",
    "@reserved: 1",
    "`backtick: 1",
    "long: " + "y" * 5_000,
    "deep: " + "[" * 200 + "]" * 200,
    "deepmap: " + "{a: " * 150 + "1" + "}" * 150,
    "unclosed: " + "[" * 200,
    "seed: 0x7fffffffffffffffffffff",
    "seed: 1e999",
    "seed: -.inf",
    "seed: .nan",
    "seed: 0o777",
    "seed: 1_000_000",
    "seed: 12:30:00",
    "name: !!binary bmFtZQ==",
]
# fmt: off
BAD_BYTES = [b"\xff", b"\xfe\xff", b"\xc3", b"\xed\xa0\x80", b"\x80", b"\xf4\x90\x80\x80",
             b"\x00", b"\x07", b"\x1b[31m", b"\x85", b"\xef\xbb\xbf", b"\r", b"\x0b"]
# fmt: on


@st.composite
def hostile_config_bytes(draw) -> bytes:
    """A mutated (or untouched) example config, then damaged as text zero to three times."""
    if draw(st.booleans()):
        data = draw(mutated_config()).encode("utf-8")
    else:
        data = draw(st.sampled_from(BASE_TEXTS)).encode("utf-8")
    for _ in range(draw(st.integers(0, 3))):
        lines = data.split(b"\n")
        at = draw(st.integers(0, max(len(lines) - 1, 0)))
        action = draw(
            st.sampled_from(
                [
                    "snippet",
                    "value",
                    "bytes",
                    "bom",
                    "tab",
                    "truncate",
                    "duplicate",
                    "delete",
                    "indent",
                ]
            )
        )
        if action == "snippet":
            line = lines[at]
            indent = line[: len(line) - len(line.lstrip(b" "))]
            lines.insert(at, indent + draw(st.sampled_from(SNIPPETS)).encode("utf-8"))
        elif action == "value" and b": " in lines[at]:
            head = lines[at].split(b": ", 1)[0]
            tag = draw(st.sampled_from(TAGS + SNIPPETS[-12:]))
            lines[at] = head + b": " + tag.split(": ", 1)[-1].encode("utf-8")
        elif action == "bytes":
            pos = draw(st.integers(0, len(data)))
            data = data[:pos] + draw(st.sampled_from(BAD_BYTES)) + data[pos:]
            continue
        elif action == "bom":
            data = draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"])) + data
            continue
        elif action == "tab":
            lines[at] = b"\t" + lines[at].lstrip(b" ")
        elif action == "truncate":
            data = data[: draw(st.integers(0, len(data)))]
            continue
        elif action == "duplicate":
            lines.insert(at, lines[at])
        elif action == "delete" and lines:
            del lines[at]
        elif action == "indent":
            lines[at] = b" " * draw(st.integers(1, 7)) + lines[at]
        data = b"\n".join(lines)
    return data


garbage_bytes = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda text: text.encode("utf-8")),
    st.sampled_from(
        [
            b"",
            b"\n",
            b"   \n\t\n",
            b"# only a comment\n",
            b"---\n",
            b"...\n",
            b"~\n",
            b"[]\n",
            b"{}\n",
            b"42\n",
            b"- a\n- b\n",
            b'"text"\n',
            b"\xef\xbb\xbf",
            b"\xef\xbb\xbfmodel: 1\n",
            b"\x00\x00\x00",
        ]
    ),
)


# fmt: off
OVERRIDE_KEYS = ["optimizer.lr", "model.layers[0]", "model.layers[99]", "model.layers[-1]",
                 "data", "data.options", "train.epochs", "name", "seed", "model", "new.key",
                 "a..b", "[0]", "model.layers[0].linear.out", "x" * 300, "", "loss.name",
                 "metrics[0]", "metrics[5]", "data.transforms[0].normalize.mean"]
# fmt: on


@st.composite
def hostile_override(draw) -> str:
    """A `--set key=value` whose key or value (YAML) is hostile."""
    key = draw(st.one_of(st.sampled_from(OVERRIDE_KEYS), st.text(max_size=20)))
    value = draw(
        st.one_of(
            st.sampled_from(TAGS),
            st.sampled_from(SNIPPETS).map(lambda snippet: snippet.split(": ", 1)[-1]),
            st.sampled_from(
                [
                    bomb_text(9, 6, "list").replace("\n", " "),
                    "[" * 200,
                    "&a [*a]",
                    "{<<: [1]}",
                    "*undefined",
                    "'",
                    "\x00",
                    "",
                ]
            ),
            values.map(
                lambda value: yaml.dump(
                    value, Dumper=_DUMPER, default_flow_style=True, width=10**6
                ).strip()
            ),
        )
    )
    separator = draw(st.sampled_from(["=", "=", " = ", ":", ""]))
    return f"{key}{separator}{value}"
