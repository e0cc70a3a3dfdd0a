"""data.path: a relative path in a config file is read from the file's folder (as docker
compose reads its files), one given with --set from the current folder; the run records the
absolute path; a path that names nothing says where it looked, with the file, line and key."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from trainctl.cli import app
from trainctl.config import load_config
from trainctl.train.rundir import RunFolder

ROOT = Path(__file__).parents[2]
runner = CliRunner()

CONFIG = """\
name: tabular
data:
  dataset: npz
  path: ../data/table.npz
model:
  layers: [linear: {out: 3}]
train: {max_steps: 2}
"""


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """project/configs/c.yaml, whose data.path ../data/table.npz is project/data/table.npz."""
    (tmp_path / "data").mkdir()
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    np.savez(tmp_path / "data" / "table.npz", x=x, y=np.arange(40) % 3)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "c.yaml").write_text(CONFIG)
    (tmp_path / "elsewhere").mkdir()
    return tmp_path


def test_a_relative_path_is_read_from_the_config_files_folder(project, monkeypatch):
    monkeypatch.chdir(project / "elsewhere")
    config = load_config("../configs/c.yaml")
    assert config.data.path == str(project / "data" / "table.npz")


def test_train_works_from_any_folder_and_the_run_records_the_absolute_path(project, monkeypatch):
    monkeypatch.chdir(project / "elsewhere")
    result = invoke("train", project / "configs" / "c.yaml", "--runs-root", "runs", "-q")
    assert result.exit_code == 0, result.output
    (run,) = (project / "elsewhere" / "runs").iterdir()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["path"] == str(project / "data" / "table.npz")
    monkeypatch.chdir(project)  # the run's config reads the same files from anywhere
    assert invoke("eval", run).exit_code == 0


def test_a_relative_path_given_with_set_is_read_from_the_current_folder(project, monkeypatch):
    monkeypatch.chdir(project / "data")
    config = load_config(project / "configs" / "c.yaml", ["data.path=table.npz"])
    assert config.data.path == str(project / "data" / "table.npz")


def test_a_missing_path_says_where_it_looked_with_the_file_line_and_key(project, monkeypatch):
    monkeypatch.chdir(project / "elsewhere")
    (project / "data" / "table.npz").unlink()
    result = invoke("train", "../configs/c.yaml", "--runs-root", "runs")
    assert result.exit_code == 2
    message = result.output.strip()
    assert message.startswith("../configs/c.yaml:4: data.path: ")
    assert f"at {project / 'data' / 'table.npz'}, found nothing there" in message
    assert f"read from {project / 'configs'}" in message
    assert not (project / "elsewhere" / "runs").exists()


def test_a_missing_path_given_with_set_names_the_override_and_the_current_folder(
    project, monkeypatch
):
    monkeypatch.chdir(project / "elsewhere")
    result = invoke("validate", project / "configs" / "c.yaml", "--build",
                    "--set", "data.path=nowhere.npz")  # fmt: skip
    assert result.exit_code == 2
    assert result.output.startswith("--set data.path=nowhere.npz: data.path: ")
    assert f"at {project / 'elsewhere' / 'nowhere.npz'}, found nothing there" in result.output
    assert f"given with --set is read from {project / 'elsewhere'}" in result.output


def test_a_run_made_before_paths_were_resolved_reads_its_relative_path_from_the_cwd(
    project, monkeypatch
):
    """Older runs saved data.path as written, which meant the current folder."""
    run = project / "runs" / "old"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(CONFIG.replace("../data/table.npz", "data/table.npz"))
    monkeypatch.chdir(project)
    assert RunFolder.open(run).read_config().data.path == str(project / "data" / "table.npz")


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_point_at_the_repositorys_datasets_folder(config, monkeypatch):
    monkeypatch.chdir(config.parents[1].parent)  # wherever trainctl is run from
    path = load_config(config).data.path
    assert path is None or Path(path).parent == ROOT / "datasets"
