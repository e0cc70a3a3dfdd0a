"""Options of a named data set or transform, checked against its spec.Entry for Python callers.

Configs are checked by the config loader (with file and line); this is the same check for
code that calls `load_splits` or builds a `Loader` directly, as one-line DataErrors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainctl.errors import DataError
from trainctl.spec import ArgError, Entry, resolve_args


def resolve_options(kind: str, entry: Entry, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every option of `entry` (`kind` is "data set" or "transform"), given or default."""
    given = dict(options or {})
    for key, value in given.items():
        if key in entry.args:
            try:
                entry.args[key].check(value)
            except ArgError as exc:
                raise DataError(f"{kind} {entry.name}: option {key}: {exc}") from None
    try:
        return resolve_args(entry, given)
    except KeyError as exc:  # an unknown or a missing option, named in the message
        raise DataError(f"{kind} {exc.args[0]}") from None
