"""YAML text -> plain values that remember where each came from, and `--set` overrides on them.

The values are exactly what `yaml.safe_load` would give, but built from `yaml.compose` so the
line of every key is kept, duplicate keys are refused (PyYAML silently keeps the last) and a
tag SafeLoader cannot construct is one issue rather than a stop. `Document.issue` turns a
key path into a `ConfigIssue` naming the file and line, or the `--set` override the value
came from.

Hostile documents are bounded: nesting deeper than MAX_DEPTH levels (which would exhaust
Python's stack) and aliases or merge keys that repeat more than MAX_REPEATED_VALUES values
in all (a "billion laughs" expands a few hundred bytes into billions of values) are one
issue each, found before the work or memory grows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from trainctl.errors import ConfigIssue
from trainctl.spec import describe

KeyPath = tuple[str | int, ...]

MAX_DEPTH = 100  # levels of nested mappings and lists; real configs use fewer than 10
MAX_REPEATED_VALUES = 10_000  # values aliases and merge keys may repeat, in all

_MAP_TAG, _SEQ_TAG = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_KEY_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)$")
_PLAIN_KEY = re.compile(r"[^\s.\[\]'\"]+")


def format_key(path: KeyPath) -> str:
    """('model', 'layers', 2, 'linear') -> 'model.layers[2].linear'.

    A key that would not read back as one part (a dot, a bracket, a space, a line break, an
    unprintable character) is quoted, as in `train['max steps']`: a message stays one line.
    """
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif quote_key(part) != part:
            text += f"[{part!r}]"
        else:
            text += f".{part}" if text else part
    return text


def quote_key(key: str) -> str:
    """`key` as it is, or quoted when it holds a dot, bracket, quote, space or a character
    that is not printable (a line break would split a one-line message)."""
    return key if _PLAIN_KEY.fullmatch(key) and key.isprintable() else repr(key)


def parse_key(text: str) -> KeyPath | None:
    """'model.layers[2].linear' -> ('model', 'layers', 2, 'linear'); None if malformed."""
    path: list[str | int] = []
    for part in text.split("."):
        match = _KEY_PART.match(part)
        if match is None:
            return None
        path.append(match.group(1))
        path.extend(int(index) for index in re.findall(r"\d+", match.group(2)))
    return tuple(path)


@dataclass
class Document:
    """A config's values, the line of each key path, and the issues found so far."""

    source: str
    data: Any = None
    lines: dict[KeyPath, int] = field(default_factory=dict)
    origins: dict[KeyPath, str] = field(default_factory=dict)  # path -> the --set that wrote it
    issues: list[ConfigIssue] = field(default_factory=list)
    folder: Path | None = None  # where relative paths in the file are read from; None: cwd

    def issue(self, path: KeyPath, message: str) -> None:
        """Record a problem at `path`, naming the override that set it, else the file and line.

        One issue per key: a value the YAML reader already refused is not reported again.
        """
        issue = self.issue_at(path, message)
        if not any((i.file, i.key) == (issue.file, issue.key) for i in self.issues):
            self.issues.append(issue)

    def issue_at(self, path: KeyPath, message: str) -> ConfigIssue:
        """A problem at `path`, placed as `issue` places it, but not recorded: for checks
        that run after the config is loaded (building the model, reading the data)."""
        return ConfigIssue(self.origin(path), self.line(path), format_key(path), message)

    def overridden(self, path: KeyPath) -> bool:
        """Whether a `--set` override wrote `path` or one of its ancestors."""
        return any(path[:end] in self.origins for end in range(len(path), -1, -1))

    def folder_of(self, path: KeyPath) -> Path:
        """The folder a relative file path at `path` is read from: the current folder when an
        override wrote it (what a user typing a path means), else `folder`, the config file's
        own folder (as docker compose reads the paths in its files)."""
        if self.folder is None or self.overridden(path):
            return Path.cwd()
        return self.folder

    def origin(self, path: KeyPath) -> str:
        """The `--set` override that wrote `path` or one of its ancestors, else the file."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.origins:
                return self.origins[path[:end]]
        return self.source

    def line(self, path: KeyPath) -> int | None:
        """The file line of `path`, or of its nearest ancestor; None when an override set it."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.origins:
                return None
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None


def read_document(text: str, source: str) -> Document:
    """Parse a whole config file; a syntax error stops parsing, other issues are collected."""
    doc = Document(source)
    root = _compose(text, doc)
    if doc.issues:
        return doc
    if root is None:
        doc.issues.append(
            ConfigIssue(
                source, 1, "", "expected a mapping of settings (model: ...), found an empty file"
            )
        )
        return doc
    doc.lines[()] = root.start_mark.line + 1
    doc.data = _Builder(doc).build(root, ())
    if not isinstance(doc.data, dict) and not doc.issues:
        message = f"expected a mapping of settings at the top level, found {describe(doc.data)}"
        doc.issues.append(ConfigIssue(source, doc.lines[()], "", message))
    return doc


def apply_overrides(doc: Document, overrides: list[str] | tuple[str, ...]) -> None:
    """Apply each `key.path=value` to `doc.data`, in order; a bad one is an issue, not a stop.

    The value is YAML (`0.1`, `[]`, `{out: 64}`), read like the file itself.
    """
    for override in overrides:
        origin = override_origin(override)
        key_text, equals, value_text = override.partition("=")
        path = parse_key(key_text.strip()) if equals else None
        if path is None:
            example = "optimizer.lr=0.1 or model.layers[1].linear.out=64"
            doc.issues.append(
                ConfigIssue(origin, None, "", f"expected key.path=value, e.g. {example}")
            )
            continue
        value_doc = Document(origin)
        node = _compose(value_text, value_doc)
        value = None if node is None else _Builder(value_doc).build(node, path)
        for issue in value_doc.issues:
            doc.issues.append(ConfigIssue(origin, None, format_key(path), issue.message))
        written = None if value_doc.issues else _set(doc, path, value, origin)
        if written is not None:
            doc.lines = {p: line for p, line in doc.lines.items() if p[: len(written)] != written}
            doc.origins = {p: o for p, o in doc.origins.items() if p[: len(written)] != written}
            doc.origins[written] = origin


def override_origin(override: str) -> str:
    """'--set key=value', the name of an override in messages; quoted when it holds a line
    break or another unprintable character (a quoted argument can), so a message stays one
    line."""
    return f"--set {override if override.isprintable() else repr(override)}"


def _set(doc: Document, path: KeyPath, value: Any, origin: str) -> KeyPath | None:
    """Put `value` at `path`, creating mappings on the way; None (and an issue) if it cannot.

    Returns the shortest path whose value the override wrote: `path`, or the first mapping
    it had to create on the way there.
    """
    parent: Any = doc.data
    created: KeyPath | None = None
    for depth, part in enumerate(path):
        problem = _cannot_enter(parent, part, path[:depth])
        if problem:
            doc.issues.append(ConfigIssue(origin, None, format_key(path[: depth + 1]), problem))
            return None
        if depth == len(path) - 1:
            break
        child, following = (
            parent[part] if isinstance(part, int) else parent.get(part),
            path[depth + 1],
        )
        if isinstance(child, str) and following == child:  # `- linear` + layers[0].linear.out
            child = {child: None}
        elif isinstance(child, str) and depth == 0 and isinstance(following, str):
            child = {"name": child}  # `optimizer: sgd` + optimizer.lr
        elif child is None and isinstance(following, str):
            child, created = {}, created or path[: depth + 1]
        parent[part] = child
        parent = child
    parent[path[-1]] = value
    return created or path


def _cannot_enter(parent: Any, part: str | int, where: KeyPath) -> str:
    """Why `part` cannot be looked up in `parent` (found at `where`), or ''."""
    place = format_key(where) or "the top level"
    if isinstance(part, int) and isinstance(parent, list) and not 0 <= part < len(parent):
        return f"expected an index in [0, {len(parent)}) of {place}, found {part}"
    if isinstance(part, int) and not isinstance(parent, list):
        return f"expected a key of {place}, found an index into {describe(parent)}"
    if isinstance(part, str) and not isinstance(parent, dict):
        return f"expected {place} to be a mapping, found {describe(parent)}"
    return ""


class _Loader(yaml.SafeLoader):
    """SafeLoader whose composer stops at MAX_DEPTH levels: it recurses once per level, so a
    file of 100,000 `[` would otherwise end in a RecursionError."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    problem=f"expected at most {MAX_DEPTH} levels of nested mappings and "
                    "lists, found more",
                    problem_mark=self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _compose(text: str, doc: Document) -> Node | None:
    """The node tree of `text`, or None with an issue for a YAML syntax error."""
    try:
        return yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        line = None if mark is None else mark.line + 1
        doc.issues.append(ConfigIssue(doc.source, line, "", f"invalid YAML: {problem}"))
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        character = exc.character if isinstance(exc.character, int) else ord(exc.character)
        message = f"invalid YAML: the character U+{character:04X} is not allowed in YAML text"
        doc.issues.append(ConfigIssue(doc.source, line, "", message))
    return None


class _Stop(Exception):
    """A document too deep or too repetitive to build; the issue is already recorded."""


class _Builder:
    """Walks a node tree into plain values, recording lines and issues in a Document.

    A node built a second time is one an alias (or a merge key) repeats: those repeats are
    counted against MAX_REPEATED_VALUES, and the depth of the values built (aliases nest
    without the composer seeing it) against MAX_DEPTH.
    """

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.constructor = yaml.SafeLoader("")
        self.open: set[int] = set()  # nodes being built: an alias back to one is a cycle
        self.built: set[int] = set()
        self.repeated = 0
        self.merged_sizes: dict[int, int | None] = {}  # None while being counted

    def build(self, node: Node, path: KeyPath) -> Any:
        """The plain value of `node`; None when the document is too deep or too repetitive."""
        try:
            return self.value(node, path)
        except _Stop:
            return None

    def _repeat(self, node: Node, path: KeyPath, count: int) -> None:
        self.repeated += count
        if self.repeated > MAX_REPEATED_VALUES:
            self._stop(
                node,
                path,
                f"expected aliases (*name) and merge keys (<<) to repeat at most "
                f"{MAX_REPEATED_VALUES:,} values in all, found more (a 'billion laughs'?)",
            )

    def _stop(self, node: Node, path: KeyPath, message: str) -> None:
        """Record `message` at the key nearest to `path` (whose line is where the alias was
        used; an aliased node only knows where it was defined) and stop building."""
        keys = [end for end in range(len(path), 0, -1) if isinstance(path[end - 1], str)]
        self._issue(node, path[: keys[0]] if keys else path, message)
        raise _Stop

    def value(self, node: Node, path: KeyPath) -> Any:
        if id(node) in self.open:
            self._issue(
                node, path, "expected plain YAML values, found an alias that contains itself"
            )
            return None
        if len(path) > MAX_DEPTH:
            message = f"expected at most {MAX_DEPTH} levels of nested values, found more"
            self._stop(node, path[:MAX_DEPTH], message + " (through aliases)")
        if id(node) in self.built:
            self._repeat(node, path, 1)
        self.built.add(id(node))
        self.open.add(id(node))
        try:
            if isinstance(node, MappingNode) and node.tag == _MAP_TAG:
                return self._mapping(node, path)
            if isinstance(node, SequenceNode) and node.tag == _SEQ_TAG:
                return [self._item(item, path + (i,)) for i, item in enumerate(node.value)]
            if isinstance(node, ScalarNode):
                return self._scalar(node, path)
            self._unsupported(node, path)
            return None
        finally:
            self.open.discard(id(node))

    def _item(self, node: Node, path: KeyPath) -> Any:
        self.doc.lines[path] = node.start_mark.line + 1
        return self.value(node, path)

    def _mapping(self, node: MappingNode, path: KeyPath) -> dict[str, Any]:
        self._repeat(node, path, max(0, self._merged_size(node, path, 0) - len(node.value)))
        try:
            self.constructor.flatten_mapping(node)  # merge keys (<<: *anchor), as safe_load does
        except yaml.MarkedYAMLError as exc:
            self._issue(node, path, f"invalid merge (<<): {exc.problem}")
            return {}
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self._scalar(key_node, path) if isinstance(key_node, ScalarNode) else key_node
            if not isinstance(key, str):
                text = key_node.value if isinstance(key_node, ScalarNode) else "?"
                found = "a mapping or list" if isinstance(key, Node) else describe(key)
                message = f"expected a text key, found {found} (write it in quotes: {text!r})"
                self._issue(key_node, path + (text,), message)
                continue
            self.doc.lines[path + (key,)] = key_node.start_mark.line + 1
            result[key] = self.value(value_node, path + (key,))
        return result

    def _merged_size(self, node: MappingNode, path: KeyPath, depth: int) -> int:
        """How many pairs `node` holds once its merge keys are expanded, counted before
        PyYAML expands them (in memory, recursively and in place); its keys are checked on
        the way, while they are still the ones written."""
        known = self.merged_sizes.get(id(node), -1)
        if known is None or depth > MAX_DEPTH:
            problem = "one that merges itself" if known is None else "merges nested too deep"
            self._stop(node, path, f"expected a merge (<<) of other mappings, found {problem}")
        if known >= 0:
            return known
        self.merged_sizes[id(node)] = None
        self._check_keys(node, path)
        size = 0
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                size += 1
                continue
            merged = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for inner in merged:
                if isinstance(inner, MappingNode):
                    size += self._merged_size(inner, path, depth + 1)
        self.merged_sizes[id(node)] = size
        return size

    def _check_keys(self, node: MappingNode, path: KeyPath) -> None:
        """Each key once: YAML would silently keep only the last of two."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag != _MERGE_TAG:
                key, line = key_node.value, key_node.start_mark.line + 1
                if key in seen:
                    self._issue(
                        key_node,
                        path + (str(key),),
                        f"expected each key once, found it again (first on line {seen[key]}); "
                        "YAML would silently keep only the last",
                    )
                seen.setdefault(key, line)

    def _scalar(self, node: ScalarNode, path: KeyPath) -> Any:
        if node.tag not in self.constructor.yaml_constructors:
            self._unsupported(node, path)
            return None
        try:
            return self.constructor.construct_object(node, deep=True)
        except Exception as exc:
            # PyYAML's constructors fail on bad text in many ways: KeyError for `!!bool maybe`,
            # AttributeError for `!!timestamp 1`, ValueError (with a useful reason) for others.
            reason = str(exc) if isinstance(exc, ValueError) else ""
            reason = f" ({reason[:77]}...)" if len(reason) > 80 else f" ({reason})" * bool(reason)
            expected = f"expected a value of type {_tag(node.tag)}"
            self._issue(node, path, f"{expected}, found {describe(node.value)}{reason}")
        return None

    def _unsupported(self, node: Node, path: KeyPath) -> None:
        self._issue(
            node, path, f"expected plain YAML values, found the tag {_tag(node.tag)} (not allowed)"
        )

    def _issue(self, node: Node, path: KeyPath, message: str) -> None:
        self.doc.lines.setdefault(path, node.start_mark.line + 1)
        self.doc.issue(path, message)


def _tag(tag: str) -> str:
    prefix = "tag:yaml.org,2002:"
    short = "!!" + tag.removeprefix(prefix) if tag.startswith(prefix) else tag
    return short if short.isprintable() else repr(short)
