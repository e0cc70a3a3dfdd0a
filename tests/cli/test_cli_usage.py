"""Usage errors (an unknown option or command, a missing argument, a value of the wrong type)
read like every other error of trainctl: one line on stderr naming the command, exit code 2."""

import pytest
from typer.testing import CliRunner

from trainctl.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["train", "c.yaml", "--nope"], "trainctl train: no such option: --nope"),
        (["eval"], "trainctl eval: missing argument 'RUN'"),
        (["runs", "show"], "trainctl runs show: missing argument 'RUN'"),
        (["nosuch"], "trainctl: no such command 'nosuch'"),
        (["--nope"], "trainctl: no such option: --nope"),
        (["data", "fetch", "a", "b"], "trainctl data fetch: got unexpected extra argument(s) (b)"),
        (["compare", "c.yaml", "--steps", "x"], "trainctl compare: invalid value for '--steps'"),
        (["compare", "c.yaml", "--batch-sizes", "a"], "trainctl compare: invalid value: "),
    ],
)
def test_a_usage_error_is_one_line_naming_the_command(args, line):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    (printed,) = result.stderr.splitlines()
    assert printed.startswith(line), printed
    command = line.split(":")[0]
    assert printed.endswith(f"; see {command} --help"), printed


def test_a_group_without_a_command_still_shows_its_help():
    result = runner.invoke(app, ["data"])
    assert "Usage" in result.output and "fetch" in result.output
