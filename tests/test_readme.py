"""The README stays true: its config reference is the registries', its commands exist."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import typer
from typer.testing import CliRunner

from trainctl.cli import app
from trainctl.config.reference import BEGIN, END, config_reference

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def test_config_reference_is_generated_from_the_registries():
    assert README.count(BEGIN) == README.count(END) == 1, "one config reference, marked once"
    start, stop = README.index(BEGIN), README.index(END) + len(END)
    assert README[start:stop] + "\n" == config_reference(), (
        "README config reference is stale: regenerate it with `python -m trainctl.config.reference`"
    )


def test_set_up_section_is_the_two_commands_ci_runs():
    block = README.split("## Set up", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line for line in block.strip().splitlines() if line.strip()]
    assert lines == [
        "pip install -e . && trainctl train configs/digits_mlp.yaml",
        "pip install -e '.[test]' && pytest",
    ]
    ci = (Path(__file__).parents[1] / ".ci" / "run").read_text()
    assert "pip install -e '.[test]'" in ci and "pytest" in ci


def test_every_command_has_an_example_in_the_readme():
    """Each command and subcommand `trainctl --help` lists is shown run as `$ trainctl ...`."""
    examples = re.findall(r"^\$ trainctl (.+)$", README, flags=re.MULTILINE)
    group = typer.main.get_command(app)
    missing = []
    for name, command in group.commands.items():
        for sub in [None, *getattr(command, "commands", {})]:
            words = f"{name} {sub}" if sub else name
            if not any(f"{e} ".startswith(f"{words} ") for e in examples):
                missing.append(words)
    assert not missing, f"no `$ trainctl ...` example in README.md for: {missing}"


def test_every_command_in_the_readme_parses():
    """Each `$ trainctl ...` example names a real command with options it accepts."""
    commands = re.findall(r"^\$ (trainctl .+)$", README, flags=re.MULTILINE)
    assert len(commands) >= 8
    runner = CliRunner()
    group = typer.main.get_command(app)
    for command in commands:
        args = shlex.split(command)[1:]
        path = []  # the command (and subcommand) names at the front, e.g. ["runs", "show"]
        node = group
        for word in args:
            children = getattr(node, "commands", {})
            if word not in children:
                break
            path.append(word)
            node = children[word]
        assert path, f"{command}: no such trainctl command"
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (command, result.output)
        for option in (a.split("=")[0] for a in args if a.startswith("--")):
            assert option in result.output, (command, option)


def test_the_files_the_predict_and_serve_examples_read_are_made_as_shown(tmp_path):
    """`new.npz` (predict) and `request.json` (serve) come from the README's own commands."""
    makers = [
        c for c in re.findall(r"^\$ python -c (.+)$", README, flags=re.MULTILINE)
        if "open('request.json', 'w')" in c or "np.savez('new.npz'" in c
    ]  # fmt: skip
    assert len(makers) == 2
    (tmp_path / "datasets").symlink_to(ROOT / "datasets")
    for code in makers:
        subprocess.run([sys.executable, "-c", *shlex.split(code)], cwd=tmp_path, check=True)
    images = np.load(tmp_path / "new.npz")["x"]
    assert images.shape == (3, 8, 8, 1) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1
    request = json.loads((tmp_path / "request.json").read_text())
    np.testing.assert_array_equal(np.array(request["instances"], np.float32), images[:1])
