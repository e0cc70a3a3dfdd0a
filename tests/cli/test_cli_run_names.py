"""Every command that takes a run takes its folder or its name under --runs-root."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trainctl.cli import app

ROOT = Path(__file__).parents[2]
runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture
def run(tmp_path, monkeypatch) -> Path:
    """A finished run in <tmp>/elsewhere/runs, the working folder an empty <tmp>/work."""
    runs = tmp_path / "elsewhere" / "runs"
    result = invoke("train", ROOT / "configs/digits_mlp.yaml", "--runs-root", runs, "-q",
                    "--set", "train.max_steps=3")  # fmt: skip
    assert result.exit_code == 0, result.output
    (work := tmp_path / "work").mkdir()
    monkeypatch.chdir(work)
    (path,) = runs.iterdir()
    return path


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "{name}", "--runs-root", "{root}"],
        ["train", "--resume", "{name}", "--runs-root", "{root}", "-q"],
        ["runs", "show", "{name}", "--runs-root", "{root}"],
        ["runs", "--runs-root", "{root}", "show", "{name}"],
    ],
    ids=["eval", "resume", "show", "show-under-runs"],
)
def test_a_run_name_is_looked_up_under_the_runs_root(run, command):
    args = [part.format(name=run.name, root=run.parent) for part in command]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert run.name in result.stdout


def test_the_default_runs_root_is_runs_in_the_working_folder(run, monkeypatch):
    monkeypatch.chdir(run.parent.parent)
    for args in (["eval", run.name], ["train", "--resume", run.name, "-q"]):
        result = invoke(*args)
        assert result.exit_code == 0, result.output


def test_a_path_still_works_wherever_the_runs_root_is(run):
    result = invoke("eval", run, "--runs-root", "nowhere")
    assert result.exit_code == 0, result.output


def test_an_unknown_name_names_both_places_looked(run):
    result = invoke("eval", "nope", "--runs-root", run.parent)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"nope is not a run folder: it does not exist; {run.parent / 'nope'} is not a run "
        "folder: it does not exist"
    )


def test_a_folder_in_the_way_that_is_no_run_does_not_hide_the_named_run(run):
    Path(run.name).mkdir()  # in the working folder, without a config.yaml
    result = invoke("eval", run.name, "--runs-root", run.parent, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["run"] == str(run)
