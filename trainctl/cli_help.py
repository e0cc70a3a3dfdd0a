"""How `--help` reads: every option's value named, no Python type labels, plain usage lines,
paragraphs that wrap to the terminal.

Recent Typer versions label options with their Python type in angle brackets, flags
included (`--force <bool>`, though a flag takes no value), and write a required argument
as `{CONFIG}` in the usage line. With these command classes a flag shows nothing after it,
an option shows its value's name (`--runs-root RUNS_ROOT`, or the metavar it was given), and
the usage line reads the way click and most tools write it: `trainctl eval [OPTIONS] RUN_DIR`,
`trainctl train [OPTIONS] [CONFIG]`.

With Rich markup Typer keeps a docstring's line breaks and then wraps the lines again to the
terminal, which leaves a ragged short line after every source line (and breaks a command's
one-line summary in two); these classes join each paragraph's lines first.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from typer.core import TyperCommand, TyperGroup


def reflowed(text: str | None) -> str | None:
    """`text` with the lines of each paragraph joined into one, for Rich to wrap."""
    if not text:
        return text
    paragraphs = re.split(r"\n[ \t]*\n", inspect.cleandoc(text))
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def _no_type(ctx: Any) -> None:
    """An argument's type label: none, its name (RUN, CONFIG) says what it takes."""


class _NamedValues:
    """Options without a metavar get one: none for a flag, the option's name for a value;
    arguments show no type; the help's paragraphs are reflowed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.help = reflowed(self.help)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """Rich ends a help text whose reader went away (`trainctl --help | head -3`) with
        SystemExit(1), the exit status of a failed run; the only SystemExit help rendering
        raises, it is handed on as the BrokenPipeError the CLI turns into exit status 141."""
        try:
            super().format_help(ctx, formatter)  # type: ignore[misc]
        except SystemExit:
            raise BrokenPipeError("the reader of the help text went away") from None

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if param.param_type_name == "option" and param.metavar is None:
                param.metavar = "" if param.is_flag else param.name.upper()
            elif param.param_type_name == "argument":
                param.display_type_rich = _no_type
        return params


class HelpGroup(_NamedValues, TyperGroup):
    """A command group whose --help names option values instead of their types."""


class HelpCommand(_NamedValues, TyperCommand):
    """A command whose --help names option values and writes arguments as CONFIG or [CONFIG]."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                continue
            name = (param.metavar or param.name.upper()) + ("..." if param.nargs != 1 else "")
            pieces.append(name if param.required else f"[{name}]")
        return pieces
