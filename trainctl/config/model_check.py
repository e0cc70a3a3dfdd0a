"""Checking the two model forms beyond a layer list: a DAG of named blocks, and a user's
Python Module named by file (or module) and class.

What can be known from the config alone is checked here, with the file and line of each
problem: block names and inputs that exist, joins where blocks meet, no cycles, every block
leading to the output, a Python file that exists. Shapes are checked when the model is
built for the data (nn/blocks.py), and the Python class when it is imported
(nn/python_model.py), which runs the user's code and so waits for `validate --build`,
`train` and the other commands that build the model.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from trainctl.config.check import _did_you_mean, _found
from trainctl.config.document import KeyPath
from trainctl.config.schema import BlockConfig, ModelConfig

if TYPE_CHECKING:
    from trainctl.config.check import _Checker

MODEL_FORMS = ("layers", "blocks", "python")
# The keys of the model section for the README's reference: (key, expected, default, what).
MODEL_KEYS = (
    ("model.layers", "a non-empty list of layers", "—", "a layer list (the layers below)"),
    ("model.blocks", "a mapping of NAME: {inputs, join, layers}", "—",
     "a DAG of named blocks, each joining its inputs and running its layers"),
    ("model.blocks.NAME.inputs", "input, a block name, or a list of them",
     "the block above (the first: input)", "what the block reads"),
    ("model.blocks.NAME.join", "concat or add", "required with 2 or more inputs",
     "concat along the last axis (image channels, features), or add (equal shapes)"),
    ("model.blocks.NAME.layers", "a non-empty list of layers", "none: the join alone",
     "the layers the joined input runs through"),
    ("model.output", "a block name", "the last block", "the block whose output is the model's"),
    ("model.python", "FILE.py:Class or package.module:Class", "—",
     "a trainctl.nn.Module subclass; the file (read from the config's folder) is EXECUTED"),
    ("model.args", "a mapping", "{}",
     "the class's __init__ arguments; input_shape (one sample's shape) is added when it "
     "takes one"),
)  # fmt: skip
_FORM_KEYS = {"layers": ("layers",), "blocks": ("blocks", "output"), "python": ("python", "args")}
_BLOCK_KEYS = ("inputs", "join", "layers")
JOINS = ("concat", "add")
INPUT = "input"  # the name of the model's input among a block's inputs
_CLASS = r"[A-Za-z_][A-Za-z0-9_]*"
_BLOCK_NAME = re.compile(_CLASS)
_PYTHON_FILE = re.compile(rf"(?P<file>.+\.py):(?P<cls>{_CLASS})")
_PYTHON_MODULE = re.compile(rf"(?P<module>{_CLASS}(\.{_CLASS})*):(?P<cls>{_CLASS})")


def model_form(checker: _Checker, section: dict[str, Any]) -> str | None:
    """Which of layers, blocks, python the model section uses; None (reported) when it names
    more than one of them."""
    forms = [form for form in MODEL_FORMS if form in section]
    if len(forms) > 1:
        found = " and ".join(forms)
        checker.issue(("model",), "one of layers, blocks or python", found)
        return None
    form = forms[0] if forms else "layers"
    checker.unknown_keys(section, ("model",), _FORM_KEYS[form], f"a key of a model with {form}")
    return form


# ---------------------------------------------------------------- python: FILE.py:Class


def python_model(checker: _Checker, section: dict[str, Any]) -> ModelConfig:
    path: KeyPath = ("model", "python")
    value = section.get("python")
    target = _python_target(checker, value, path)
    args = section.get("args")
    if args is not None and not isinstance(args, dict):
        checker.issue(("model", "args"), "a mapping of the arguments of the class", _found(args))
        args = {}
    return ModelConfig(python=target, args=dict(args or {}))


def _python_target(checker: _Checker, value: Any, path: KeyPath) -> str | None:
    """'FILE.py:Class' with FILE made absolute (read from the config's folder), or
    'package.module:Class' as it is."""
    expected = "FILE.py:Class or package.module:Class"
    if not isinstance(value, str):
        checker.issue(path, expected, "nothing" if value is None else _found(value))
        return None
    by_file = _PYTHON_FILE.fullmatch(value)
    if by_file is None:
        if _PYTHON_MODULE.fullmatch(value) is None:
            checker.issue(path, expected, repr(value))
            return None
        return value
    folder = checker.doc.folder_of(path)
    file = os.path.abspath(os.path.join(folder, os.path.expanduser(by_file["file"])))
    if not os.path.isfile(file):
        checker.issue(path, f"a Python file at {file}", "nothing there")
        return None
    return f"{file}:{by_file['cls']}"


# ---------------------------------------------------------------- blocks: a small DAG


def blocks_model(checker: _Checker, section: dict[str, Any]) -> ModelConfig:
    path: KeyPath = ("model", "blocks")
    raw = section.get("blocks")
    if not isinstance(raw, dict) or not raw:
        found = "nothing" if raw is None else _found(raw)
        checker.issue(path, "a mapping of named blocks (name: {inputs, join, layers})", found)
        return ModelConfig(blocks=[])
    blocks = []
    previous = INPUT
    for name, value in raw.items():
        block = _block(checker, str(name), value, previous)
        previous = str(name)
        if block is not None:
            blocks.append(block)
    names = list(map(str, raw))
    output = section.get("output", names[-1])
    if output not in names:
        expected = f"the name of a block ({', '.join(names)})"
        checker.issue(("model", "output"), expected, repr(output))
        output = names[-1]
    if len(blocks) == len(raw) and _inputs_known(checker, blocks, names):
        _check_dag(checker, blocks, output)
    return ModelConfig(blocks=blocks, output=output)


def _block(checker: _Checker, name: str, value: Any, previous: str) -> BlockConfig | None:
    path: KeyPath = ("model", "blocks", name)
    if _BLOCK_NAME.fullmatch(name) is None or name == INPUT:
        checker.issue(path, f"a block name of letters, digits and _ other than {INPUT}", repr(name))
        return None
    if value is None:
        value = {}
    if not isinstance(value, dict):
        checker.issue(path, "a mapping of inputs, join and layers", _found(value))
        return None
    checker.unknown_keys(value, path, _BLOCK_KEYS, "a key of a block")
    inputs = value.get("inputs", [previous])
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        checker.issue(path + ("inputs",), "a block name, input, or a list of them", _found(inputs))
        return None
    join = value.get("join")
    if len(inputs) > 1 and join not in JOINS:
        found = "nothing" if join is None else repr(join)
        checker.issue(path + ("join",), f"how {len(inputs)} inputs meet: concat or add", found)
    elif len(inputs) == 1 and join is not None:
        checker.issue(path + ("join",), "no join (the block has one input)", repr(join))
    layers = [] if "layers" not in value else checker.layers(value["layers"], path + ("layers",))
    line = checker.doc.line(path)
    return BlockConfig(name, inputs, join if len(inputs) > 1 else None, layers, line)


def _inputs_known(checker: _Checker, blocks: list[BlockConfig], names: list[str]) -> bool:
    known = True
    for block in blocks:
        for index, source in enumerate(block.inputs):
            if source == block.name:
                checker.issue(_inputs_key(block, index), "another block or input",
                              f"{source!r}, the block itself")  # fmt: skip
                known = False
            elif source != INPUT and source not in names:
                choices = [INPUT, *names]
                expected = f"input or the name of a block ({', '.join(names)})"
                checker.issue(_inputs_key(block, index), expected, repr(source),
                              _did_you_mean(source, choices))  # fmt: skip
                known = False
    return known


def _inputs_key(block: BlockConfig, index: int) -> KeyPath:
    return ("model", "blocks", block.name, "inputs", index)


def _check_dag(checker: _Checker, blocks: list[BlockConfig], output: str) -> None:
    """No cycle, and every block on a path to the output (one that is not would train
    weights that change nothing)."""
    by_name = {block.name: block for block in blocks}
    cycle = _find_cycle(by_name)
    if cycle is not None:
        where = ("model", "blocks", cycle[0], "inputs")
        checker.issue(where, "blocks whose inputs form no cycle", _describe_cycle(cycle))
        return
    used, stack = set(), [output]
    while stack:
        name = stack.pop()
        if name in used or name == INPUT:
            continue
        used.add(name)
        stack.extend(by_name[name].inputs)
    for block in blocks:
        if block.name not in used:
            expected = f"every block to lead to the output ({output})"
            checker.issue(("model", "blocks", block.name), expected, "a block that does not")


def _find_cycle(by_name: dict[str, BlockConfig]) -> list[str] | None:
    """A cycle as [a, b, ..., a] (a is fed by b ...), or None. A depth-first walk with its
    own stack: a config may chain thousands of blocks, deeper than Python's recursion."""
    done: set[str] = set()
    for start in by_name:
        if start in done:
            continue
        trail, on_trail = [start], {start: 0}  # the path walked, and where each is on it
        stack = [iter(by_name[start].inputs)]
        while stack:
            source = next(stack[-1], None)
            if source is None:
                stack.pop()
                finished = trail.pop()
                del on_trail[finished]
                done.add(finished)
            elif source in on_trail:
                return [*trail[on_trail[source] :], source]
            elif source != INPUT and source not in done:
                on_trail[source] = len(trail)
                trail.append(source)
                stack.append(iter(by_name[source].inputs))
    return None


def _describe_cycle(cycle: list[str]) -> str:
    """'a -> b -> a'; a long cycle shortened to its ends and its length."""
    if len(cycle) <= 8:
        return " -> ".join(cycle)
    return f"{' -> '.join(cycle[:4])} -> ... -> {' -> '.join(cycle[-2:])} ({len(cycle) - 1} blocks)"
