"""`trainctl data fetch | list` and `data.download: true`, with a local server as the mirrors."""

import dataclasses
import json
from pathlib import Path

import pytest
from data_server import refused_url
from typer.testing import CliRunner

from trainctl.cli import app
from trainctl.data.catalog import REMOTE_DATASETS

ROOT = Path(__file__).parents[2]
runner = CliRunner()
FETCHED_CONFIGS = {
    "mnist_mlp": "mnist",
    "mnist_keras_mlp": "mnist",
    "fashion_mnist_cnn": "fashion_mnist",
    "cifar10_cnn": "cifar10",
}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def test_fetch_then_list(served, tmp_path):
    result = invoke("data", "fetch", "mnist")
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(f" into {tmp_path / 'cache' / 'mnist'}\n")
    again = invoke("data", "fetch", "mnist")
    assert again.stdout == f"mnist is already in {tmp_path / 'cache' / 'mnist'}\n"
    lines = invoke("data", "list").stdout.splitlines()
    assert lines[0].split() == ["data", "set", "status", "size", "folder"]
    size = sum(len(data) for data in served["mnist"].values())
    assert lines[1].split() == ["mnist", "present", f"{size / 1000:.1f}", "kB",
                                str(tmp_path / "cache" / "mnist")]  # fmt: skip
    assert lines[3].split() == ["cifar10", "missing", "-", str(tmp_path / "cache" / "cifar10")]


def test_fetch_root_puts_the_data_set_in_root_name(served, tmp_path):
    result = invoke("data", "fetch", "fashion_mnist", "--root", tmp_path / "elsewhere")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "elsewhere" / "fashion_mnist").iterdir()) == sorted(
        served["fashion_mnist"]
    )
    listed = invoke("data", "list", "--root", tmp_path / "elsewhere").stdout.splitlines()
    assert listed[2].split()[:2] == ["fashion_mnist", "present"]


def test_fetch_offline_is_one_line_and_exit_code_2(served, monkeypatch, tmp_path):
    remote = dataclasses.replace(REMOTE_DATASETS["mnist"], mirrors=(refused_url(),))
    monkeypatch.setitem(REMOTE_DATASETS, "mnist", remote)
    result = invoke("data", "fetch", "mnist")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert result.stderr.startswith("cannot reach any mirror of mnist (offline?): place ")
    assert all(f"{name}" in result.stderr for name in served["mnist"])
    assert f".gz in {tmp_path / 'cache' / 'mnist'} by hand (from " in result.stderr


def test_fetch_of_an_unknown_data_set(served):
    result = invoke("data", "fetch", "mnsit")
    assert (result.exit_code, result.stderr) == (
        2,
        "trainctl cannot fetch a data set called 'mnsit'; it fetches mnist, fashion_mnist, "
        "cifar10\n",
    )


@pytest.mark.parametrize("mode", ["eager", "graph"])
@pytest.mark.parametrize("config", sorted(FETCHED_CONFIGS))
def test_the_example_configs_train_on_fetched_data(config, mode, served, mirror, tmp_path):
    """A fresh clone: `data fetch`, then the example config as it is (a few steps), then eval."""
    fetched = invoke("data", "fetch", FETCHED_CONFIGS[config])
    assert fetched.exit_code == 0, fetched.output
    sets = ["train.max_steps=2", "train.eval_every=2", "data.batch_size=4", f"mode={mode}"]
    overrides = [arg for s in sets for arg in ("--set", s)]
    config_path = ROOT / "configs" / f"{config}.yaml"
    result = invoke("train", config_path, *overrides, "--runs-root", tmp_path / "runs", "-q")
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    scored = invoke("eval", run, "--json")
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["samples"] == 6 if config == "cifar10_cnn" else 10


def test_data_download_true_fetches_on_first_use(served, mirror, tmp_path):
    """No `data fetch`: the config's data.download: true fetches into the cache on first use."""
    result = invoke("train", ROOT / "configs" / "mnist_mlp.yaml", "--set", "train.max_steps=2",
                    "--runs-root", tmp_path / "runs", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cache" / "mnist" / "train-images-idx3-ubyte.gz").is_file()
    assert {r.status for r in mirror.requests} == {200} and len(mirror.requests) == 4


def test_without_download_a_missing_data_set_says_how_to_fetch_it(served, tmp_path):
    result = invoke("train", ROOT / "configs" / "mnist_mlp.yaml", "--set", "data.download=false",
                    "--runs-root", tmp_path / "runs")  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr == (
        f"{tmp_path / 'cache' / 'mnist'} does not exist: expected a folder holding the MNIST IDX "
        "files; get it from `trainctl data fetch mnist` (or data.download: true)\n"
    )
