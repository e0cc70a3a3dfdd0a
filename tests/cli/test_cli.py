"""The CLI scaffold: help, version, devices, and that help stays free of heavy imports."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

import trainctl
from trainctl.cli import app

runner = CliRunner()


def test_help_lists_devices_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    assert "devices" in result.output
    assert "--version" in result.output


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, [])
    assert "Usage" in result.output
    assert "devices" in result.output


def test_version_prints_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"trainctl {trainctl.__version__}"


def test_help_imports_neither_cupy_nor_numpy() -> None:
    code = (
        "import sys\n"
        "import trainctl.cli\n"
        "from typer.testing import CliRunner\n"
        "result = CliRunner().invoke(trainctl.cli.app, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "assert 'devices' in result.output, result.output\n"
        "heavy = sorted(m for m in ('cupy', 'numpy') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_python_dash_m_runs_the_app() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "trainctl", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"trainctl {trainctl.__version__}"


def test_devices_lists_cpu_and_cuda_with_backend_status() -> None:
    backend = pytest.importorskip("trainctl.backend")
    import numpy as np

    # Wide enough that Rich does not wrap the status onto a second line.
    result = runner.invoke(app, ["devices"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    cpu_rows = [line for line in lines if " cpu " in line]
    cuda_rows = [line for line in lines if " cuda " in line]
    assert len(cpu_rows) == 1, result.output
    assert np.__version__ in cpu_rows[0]
    assert len(cuda_rows) == 1, result.output
    # The cuda row shows exactly what the backend reports, brackets and all.
    assert backend.cuda_status() in cuda_rows[0]


def _command_paths(command, path=()) -> list[tuple[str, ...]]:
    """Every command and group of the app, as the words that invoke it."""
    paths = [path]
    for name, child in getattr(command, "commands", {}).items():
        paths += _command_paths(child, (*path, name))
    return paths


def test_every_help_names_option_values_and_no_python_types() -> None:
    """Typer writes `--force <bool>` (a flag takes no value), `--name <str>`, and `[[CONFIG]]`
    for an optional argument given the metavar [CONFIG]; help reads NAME, FILE, [CONFIG]."""
    import re

    import typer

    paths = _command_paths(typer.main.get_command(app))
    assert ("runs", "show") in paths and len(paths) >= 10
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
        assert result.exit_code == 0, (path, result.output)
        types = re.findall(r"<(?:bool|str|int|float|path)>", result.output)
        assert not types, (path, types, result.output)
        usage = next(line for line in result.output.splitlines() if "Usage:" in line)
        assert "[[" not in usage and "{" not in usage, (path, usage)
    usage = runner.invoke(app, ["train", "--help"]).output
    assert "trainctl train [OPTIONS] [CONFIG]" in usage
    assert "trainctl eval [OPTIONS] RUN" in runner.invoke(app, ["eval", "--help"]).output


def test_every_help_has_an_example_and_paragraphs_that_wrap_to_the_terminal() -> None:
    """Typer keeps a docstring's line breaks under Rich markup, so on a wide terminal a
    paragraph stayed broken where the source line ended; each is one line there now."""
    import typer

    for path in _command_paths(typer.main.get_command(app)):
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "1000"})
        assert result.exit_code == 0, (path, result.output)
        text = "\n".join(line.strip() for line in result.output.splitlines())
        description = text.split("Usage:", 1)[1].split("╭", 1)[0]
        paragraphs = [p.strip() for p in description.split("\n\n") if p.strip()][1:]
        assert paragraphs[-1].startswith("Example: trainctl "), (path, paragraphs)
        broken = [p for p in paragraphs if "\n" in p]
        assert not broken, (path, broken)
