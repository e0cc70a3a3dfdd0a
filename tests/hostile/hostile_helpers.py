"""Shared pieces of the hostile-input tests: a tally, tree snapshots, CLI calls and checks."""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from pathlib import Path
from unittest import mock

import typer.main
import typer.testing
from typer.testing import CliRunner

from trainctl.cli import app

ROOT = Path(__file__).parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))

# A relative path that hostile inputs try to create (a YAML tag, a pickle): the tests run in
# an empty working folder and check that it never appears.
MARKER = "PWNED"

# How many hostile inputs of each kind the suite tried; conftest prints it at the end.
TALLY: Counter[str] = Counter()

_runner = CliRunner()
# typer's CliRunner builds the click command from the app again on every call, two thirds of
# its time; the fuzz tests make thousands of calls, so it is built once.
_COMMAND = typer.main.get_command(app)


def invoke(*args: object):
    """trainctl in-process, arguments as a user would type them, on a wide fake terminal."""
    with mock.patch.object(typer.testing, "_get_command", lambda _: _COMMAND):
        return _runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def train_small_run(runs: Path, *overrides: str) -> Path:
    """A finished three-step run of the quickstart config, hidden layers 16 and 8, in `runs`."""
    settings = [
        "train.max_steps=3",
        *overrides,
        "model.layers[1].linear.out=16",
        "model.layers[3].linear.out=8",
    ]
    sets = [part for setting in settings for part in ("--set", setting)]
    result = invoke("train", ROOT / "configs/digits_mlp.yaml", "--runs-root", runs, "-q", *sets)
    assert result.exit_code == 0, result.output
    (run,) = runs.iterdir()
    return run


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under `root` (links not followed): relative path -> content hash or kind."""
    tree = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                tree[key] = "link -> " + os.readlink(path)
            elif path.is_dir():
                tree[key] = "dir"
            else:
                tree[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return tree


def error_lines(result) -> list[str]:
    """The lines a failed command printed on stderr."""
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_user_error(result, names: str | Path, exit_code: int = 2) -> str:
    """The command failed with `exit_code` and a one-line message naming `names` (a file or
    folder); no traceback. Returns the message."""
    assert result.exit_code == exit_code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert str(names) in lines[0], (str(names), lines[0])
    return lines[0]


def assert_located_config_errors(result, source: str | Path) -> None:
    """Exit 2 and every stderr line `source:LINE: ...`: the file and a position in it."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    lines = error_lines(result)
    assert lines, result.output
    located = re.compile(re.escape(str(source)) + r":\d+: \S")
    for line in lines:
        assert located.match(line), line
