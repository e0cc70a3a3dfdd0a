"""`trainctl validate` and `trainctl config`, and how any TrainctlError reaches the user:
its message on stderr and exit code 2, a traceback only with --debug."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trainctl import config as config_module
from trainctl.cli import app
from trainctl.config import ConfigError, load_config, parse_config
from trainctl.errors import DataError

runner = CliRunner()

VALID = """\
name: tiny
data: {dataset: spirals, batch_size: 16}
model:
  layers:
    - linear: {out: 16}
    - relu
    - linear: {out: 3}
optimizer: {name: adam, lr: 0.01}
train: {epochs: 4}
"""
INVALID = """\
mode: grpah
model:
  layers:
    - lineer: {out: 3}
optimizer: {name: sgd, lr: abc}
"""


@pytest.fixture
def valid(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(VALID)
    return path


@pytest.fixture
def invalid(tmp_path: Path) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(INVALID)
    return path


def test_validate_prints_a_one_line_summary(valid: Path) -> None:
    result = runner.invoke(app, ["validate", str(valid)])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert result.stdout == (
        f"{valid} is valid: tiny: 3 layers, cross_entropy loss (accuracy), adam lr 0.01, "
        "constant schedule, spirals data in batches of 16, 4 epochs, eager mode on cpu "
        "(float32)\n"
    )


def test_validate_reports_every_issue_on_stderr_with_exit_code_2(invalid: Path) -> None:
    result = runner.invoke(app, ["validate", str(invalid)])
    assert result.exit_code == 2
    assert result.stdout == ""
    with pytest.raises(ConfigError) as info:
        load_config(invalid)
    assert result.stderr == str(info.value) + "\n"
    assert len(result.stderr.splitlines()) == 3
    assert f"{invalid}:1: mode:" in result.stderr and f"{invalid}:5: optimizer.lr:" in result.stderr
    assert "Traceback" not in result.output


def test_validate_applies_overrides(valid: Path) -> None:
    result = runner.invoke(app, ["validate", str(valid), "--set", "optimizer.lr=abc"])
    assert result.exit_code == 2
    assert (
        result.stderr
        == "--set optimizer.lr=abc: optimizer.lr: expected a number > 0, found 'abc'\n"
    )
    fixed = runner.invoke(
        app, ["validate", str(valid), "--set", "optimizer.lr=0.5", "--set", "mode=graph"]
    )
    assert fixed.exit_code == 0, fixed.output
    assert "adam lr 0.5" in fixed.stdout and "graph mode" in fixed.stdout


def test_validate_a_file_that_is_not_there(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    result = runner.invoke(app, ["validate", str(missing)])
    assert result.exit_code == 2
    assert result.stderr == f"{missing}: cannot read the file: No such file or directory\n"


def test_any_trainctl_error_becomes_its_message_and_exit_code_2(
    valid: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(path: str, overrides: list[str]) -> None:
        raise DataError("data set 'mnist' needs a path")

    monkeypatch.setattr(config_module, "load_config", fail)
    result = runner.invoke(app, ["config", str(valid)])
    assert (result.exit_code, result.stderr) == (2, "data set 'mnist' needs a path\n")


def test_debug_lets_the_error_through_with_its_traceback(invalid: Path) -> None:
    result = runner.invoke(app, ["--debug", "validate", str(invalid)])
    assert isinstance(result.exception, ConfigError)
    assert result.exit_code == 1


def test_config_prints_the_resolved_yaml(valid: Path) -> None:
    result = runner.invoke(app, ["config", str(valid), "--set", "data.batch_size=128"])
    assert result.exit_code == 0, result.output
    printed = parse_config(result.stdout, str(valid))
    assert printed == load_config(valid, ["data.batch_size=128"])
    assert "  eval_batch_size: null\n" in result.stdout  # defaults are written out
    assert "  - linear: {out: 16, bias: true, init: kaiming_uniform}\n" in result.stdout


def test_config_of_an_invalid_file_prints_the_issues(invalid: Path) -> None:
    result = runner.invoke(app, ["config", str(invalid)])
    assert result.exit_code == 2 and result.stdout == ""
    assert "did you mean 'linear'?" in result.stderr


@pytest.mark.parametrize(
    ("command", "example"),
    [
        ("validate", "trainctl validate configs/mnist_mlp.yaml --set optimizer.lr=0.1"),
        ("config", "trainctl config configs/digits_mlp.yaml --set data.batch_size=128"),
    ],
)
def test_help_shows_an_example_that_works(
    command: str, example: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert example in result.stdout and "--set" in result.stdout
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # the example paths are from the root
    ran = runner.invoke(app, shlex.split(example)[1:])
    assert ran.exit_code == 0, ran.output


def test_app_help_lists_the_commands_and_debug() -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert all(word in result.stdout for word in ("validate", "config", "--debug"))


def test_a_real_process_prints_no_traceback_unless_debug(invalid: Path) -> None:
    command = [sys.executable, "-m", "trainctl", "validate", str(invalid)]
    plain = subprocess.run(command, capture_output=True, text=True)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.splitlines()[0].startswith(f"{invalid}:1: mode: expected one of eager")
    debug = subprocess.run(command[:3] + ["--debug"] + command[3:], capture_output=True, text=True)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "ConfigError" in debug.stderr
