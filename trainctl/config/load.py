"""Reading a config: a YAML file or text -> a checked `Config`, or one `ConfigError`.

`load_config` reads the file (refusing huge files and text that is not UTF-8), `parse_config`
reads its YAML with the line of every key (`document`), applies `--set key.path=value`
overrides and checks every value against the schema and the registries (`check`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from trainctl.config.check import check_document
from trainctl.config.document import (
    KeyPath,
    apply_overrides,
    format_key,
    override_origin,
    read_document,
)
from trainctl.config.registries import load_registries
from trainctl.config.schema import Config
from trainctl.errors import ConfigError, ConfigIssue

MAX_CONFIG_BYTES = 1 << 20  # configs are a few kilobytes; YAML reads about 1 MB a second


def load_config(
    path: str | Path, overrides: Sequence[str] = (), *, relative_to: Path | None = None
) -> Config:
    """The Config in the YAML file at `path`, with `--set` overrides applied; ConfigError
    lists every problem. Relative file paths in it (data.path) are read from the file's
    folder, or from `relative_to`."""
    source = str(path)
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)  # /dev/zero, or a huge file, is not read whole
    except (OSError, ValueError) as exc:  # ValueError: a NUL character in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        issue = ConfigIssue(source, None, "", f"cannot read the file: {reason}")
        raise ConfigError([issue]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        message = f"expected a config of at most {MAX_CONFIG_BYTES:,} bytes, found a larger file"
        raise ConfigError([ConfigIssue(source, None, "", message)])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        message = f"expected UTF-8 text, found the byte 0x{raw[exc.start]:02x}"
        raise ConfigError([ConfigIssue(source, line, "", message)]) from None
    folder = Path(os.path.abspath(Path(path).parent if relative_to is None else relative_to))
    return parse_config(text, source, overrides, folder=folder)


def parse_config(
    text: str,
    source: str = "<string>",
    overrides: Sequence[str] = (),
    *,
    folder: Path | None = None,
) -> Config:
    """The Config in YAML `text`; `source` names it in messages and gives the default name.
    Relative file paths in `text` are read from `folder` (None: the current folder)."""
    doc = read_document(text, source)
    doc.folder = folder
    if not isinstance(doc.data, dict):  # a syntax error, an empty file: the issues say which
        raise ConfigError(doc.issues)
    apply_overrides(doc, tuple(overrides))
    config = check_document(doc, load_registries())
    if doc.issues:
        rank = {override_origin(override): index for index, override in enumerate(overrides)}
        raise ConfigError(sorted(doc.issues, key=lambda i: (rank.get(i.file, -1), i.line or 0)))
    return config


def config_issue(config: Config, path: KeyPath, message: str) -> ConfigIssue:
    """A problem at `path` found after loading, placed like the loader's own: the file and
    line of the value, or the `--set` that wrote it."""
    if config.document is None:  # a Config made in Python
        return ConfigIssue(config.source, None, format_key(path), message)
    return config.document.issue_at(path, message)
