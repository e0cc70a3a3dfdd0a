"""The CLI end to end on a model written in Python and on a DAG of blocks: train in both
modes, resume exactly, eval, compare, graph, validate --build; the user's errors as their
traceback (exit 1) and config mistakes as one line (exit 2)."""

import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trainctl.cli import app
from trainctl.train.checkpoint import load_checkpoint
from trainctl.train.metrics_log import read_metrics

ROOT = Path(__file__).parents[2]
PYTHON = ROOT / "configs" / "digits_python.yaml"
INCEPTION = ROOT / "configs" / "digits_inception.yaml"
UNET = ROOT / "configs" / "digits_unet.yaml"
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def train(config, runs: Path, *sets: str):
    # one BLAS thread: `threads: auto` follows the trainings running beside this one, and
    # runs compared bit for bit must not differ in how their GEMMs were split
    fixed = ("data.batch_size=16", "train.log_every=1", "threads=1")
    args = [f"--set={s}" for s in (*fixed, *sets)]
    result = invoke("train", config, *args, "--runs-root", runs, "-q")
    assert result.exit_code == 0, result.output
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    return run


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]


def weights(run: Path) -> dict:
    return load_checkpoint(run / "checkpoints" / "last.safetensors").model_state


@pytest.fixture(scope="module")
def python_run(tmp_path_factory):
    return train(PYTHON, tmp_path_factory.mktemp("runs"), "train.max_steps=6",
                 "model.args.width=4")  # fmt: skip


def test_a_python_model_trains_the_same_in_graph_mode(python_run, tmp_path):
    graph = train(PYTHON, tmp_path, "train.max_steps=6", "model.args.width=4", "mode=graph")
    assert losses(graph) == losses(python_run) and len(losses(graph)) == 6
    for name, array in weights(python_run).items():
        assert (weights(graph)[name] == array).all(), name
    summary = json.loads((python_run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["parameters"] > 0


def test_a_python_model_resumes_exactly(python_run, tmp_path):
    short = train(PYTHON, tmp_path, "train.max_steps=3", "model.args.width=4")
    result = invoke("train", "--resume", short, "--set", "train.max_steps=6", "-q")
    assert result.exit_code == 0, result.output
    assert losses(short) == losses(python_run)
    for name, array in weights(python_run).items():
        assert (weights(short)[name] == array).all(), name


def test_eval_compare_and_graph_take_a_python_model(python_run, tmp_path):
    result = invoke("eval", python_run, "--split", "test", "--json")
    assert result.exit_code == 0, result.output
    assert 0 <= json.loads(result.stdout)["metrics"]["accuracy"] <= 1
    result = invoke("compare", PYTHON, "--steps", "4", "--warmup", "1", "--rounds", "1",
                    "--set", "model.args.width=4", "--runs-root", tmp_path, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] is True
    result = invoke("graph", PYTHON, "--set", "model.args.width=4")
    assert result.exit_code == 0, result.output
    assert "concatenate" in result.stdout


def test_a_dag_of_blocks_through_the_cli(tmp_path):
    result = invoke("validate", INCEPTION, "--build")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "7 blocks of 14 layers" in lines[0]
    assert lines[2:] == [
        "  stem: input -> 2 layers -> (8, 8, 16)",
        "  branch1x1: stem -> 2 layers -> (8, 8, 8)",
        "  branch3x3: stem -> 4 layers -> (8, 8, 4)",
        "  branch_pool: stem -> 3 layers -> (8, 8, 4)",
        "  mixed: concat(branch1x1, branch3x3, branch_pool) -> (8, 8, 16)",
        "  skip: add(stem, mixed) -> (8, 8, 16)",
        "  head: skip -> 3 layers -> (10,)  (output)",
    ]
    eager = train(INCEPTION, tmp_path / "eager", "train.max_steps=3")
    graph = train(INCEPTION, tmp_path / "graph", "train.max_steps=3", "mode=graph")
    assert losses(eager) == losses(graph)
    assert invoke("eval", eager).exit_code == 0
    result = invoke("graph", INCEPTION)
    assert result.exit_code == 0 and "concatenate" in result.stdout


def test_a_dag_of_blocks_resumes_exactly_in_graph_mode(tmp_path):
    dropout = "model.blocks.head.layers=[flatten, {dropout: {p: 0.3}}, {linear: {out: 10}}]"
    whole = train(UNET, tmp_path / "whole", "train.max_steps=4", "mode=graph", dropout)
    part = train(UNET, tmp_path / "part", "train.max_steps=2", "mode=graph", dropout)
    result = invoke("train", "--resume", part, "--set", "train.max_steps=4", "-q")
    assert result.exit_code == 0, result.output
    assert losses(part) == losses(whole) and len(losses(whole)) == 4
    for name, array in weights(whole).items():
        assert (weights(part)[name] == array).all(), name


def test_a_shape_mistake_in_a_block_is_one_line_exit_2():
    result = invoke("validate", INCEPTION, "--build", "--set",
                    "model.blocks.branch1x1.layers[0].conv2d.kernel=3")  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr == (
        f"{INCEPTION}:29: model.blocks.mixed.inputs: concat needs shapes that differ only in "
        "the last axis: branch1x1 (line 19) gives (6, 6, 8), branch3x3 (line 22) gives "
        "(8, 8, 4), branch_pool (line 25) gives (8, 8, 4)\n"
    )


USER_CODE = """from trainctl import nn


def scale(x):
    return x * undefined_name


class Net(nn.Module):
    def __init__(self, input_shape):
        super().__init__()
        self.flat = nn.Flatten()
        self.out = nn.Linear(64, 10)

    def forward(self, x):
        return scale(self.out(self.flat(x)))
"""


def _user_project(tmp_path: Path, code: str, model: str = "nets.py:Net", args: str = "{}"):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "nets.py").write_text(code)
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{dataset: digits}}\nmodel: {{python: {model}, args: {args}}}\n"
                      "train: {max_steps: 2}\n")  # fmt: skip
    return config


@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_an_error_in_the_users_code_shows_their_traceback_and_exits_1(tmp_path, mode):
    config = _user_project(tmp_path, USER_CODE)
    result = invoke("train", config, "--set", f"mode={mode}", "--runs-root", tmp_path / "runs")
    assert result.exit_code == 1
    code = tmp_path / "nets.py"
    assert result.stderr == (
        "Traceback (most recent call last):\n"
        f'  File "{code}", line 15, in forward\n'
        "    return scale(self.out(self.flat(x)))\n"
        "           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        f'  File "{code}", line 5, in scale\n'
        "    return x * undefined_name\n"
        "               ^^^^^^^^^^^^^^\n"
        "NameError: name 'undefined_name' is not defined\n"
    )


def test_an_error_importing_the_users_file_is_their_traceback(tmp_path):
    config = _user_project(tmp_path, "import no_such_module_anywhere\n")
    result = invoke("validate", config, "--build")
    assert result.exit_code == 1
    assert result.stderr.startswith(f'Traceback (most recent call last):\n  File "{tmp_path}')
    assert result.stderr.endswith("No module named 'no_such_module_anywhere'\n")
    assert "/trainctl/" not in result.stderr


@pytest.mark.parametrize(
    "model, args, message",
    [
        ("nets.py:Nett", "{}", "c.yaml:2: model.python: expected a class Nett in {dir}/nets.py, "
         "found none (it defines Net)"),
        ("nets.py:Net", "{width: 3}", "c.yaml:2: model.args.width: expected the arguments of "
         "Net(input_shape), found 'width'"),
        ("nets.py:Net", "{'a b': 3}", "c.yaml:2: model.args: expected the arguments of "
         "Net(input_shape), found 'a b'"),
        ("gone.py:Net", "{}", "c.yaml:2: model.python: expected a Python file at {dir}/gone.py, "
         "found nothing there"),
    ],
)  # fmt: skip
def test_config_mistakes_in_a_python_model_are_one_line_exit_2(tmp_path, model, args, message):
    config = _user_project(tmp_path, USER_CODE, model, args)
    result = invoke("train", config, "--runs-root", tmp_path / "runs")
    assert result.exit_code == 2
    assert result.stderr == str(config.parent / message.format(dir=tmp_path)) + "\n"


def test_the_example_configs_folder_is_self_contained(tmp_path):
    """A copied configs folder still finds models.py: it is read from the config's folder."""
    shutil.copy(PYTHON, tmp_path)
    shutil.copy(ROOT / "configs" / "models.py", tmp_path)
    result = invoke("validate", tmp_path / PYTHON.name, "--build")
    assert result.exit_code == 0, result.output
    assert "Python model models.py:ResidualCNN" in result.stdout


def test_predict_and_load_restore_a_python_model(python_run):
    import numpy as np

    import trainctl

    saved = (python_run / "config.yaml").read_text()
    assert f"python: {ROOT / 'configs' / 'models.py'}:ResidualCNN" in saved
    images = np.random.default_rng(0).random((3, 8, 8, 1), dtype=np.float32)
    first = trainctl.load(python_run).predict(images)
    assert first.shape == (3, 10)
    np.testing.assert_array_equal(trainctl.load(python_run).predict(images), first)


def test_the_torch_peer_refuses_a_python_model_in_one_line(tmp_path):
    pytest.importorskip("torch")
    result = invoke("compare", PYTHON, "--with", "torch", "--steps", "2", "--rounds", "1",
                    "--runs-root", tmp_path)  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr == "model.python: the torch peer copies layer lists (model.layers) only\n"


def test_a_class_from_an_importable_package(tmp_path, monkeypatch):
    package = tmp_path / "mynets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(USER_CODE.replace("scale(self", "(self"))
    (package / "broken.py").write_text("from mynets.models import Net\n\n1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = _user_project(tmp_path / "elsewhere", "", "mynets.models:Net")
    result = invoke("train", config, "--runs-root", tmp_path / "runs", "-q")
    assert result.exit_code == 0, result.output
    result = invoke("validate", config, "--build", "--set", "model.python=mynets.broken:Net")
    assert result.exit_code == 1
    assert result.stderr == (
        "Traceback (most recent call last):\n"
        f'  File "{package / "broken.py"}", line 3, in <module>\n'
        "    1 / 0\n"
        "    ~~^~~\n"
        "ZeroDivisionError: division by zero\n"
    )
    (package / "__init__.py").write_text("raise RuntimeError('the package is broken')\n")
    for name in [name for name in sys.modules if name.startswith("mynets")]:
        monkeypatch.delitem(sys.modules, name)  # a new process would import it afresh
    result = invoke("validate", config, "--build")
    assert result.exit_code == 1
    assert result.stderr.endswith(
        "line 1, in <module>\n    raise RuntimeError('the package is broken')\n"
        "RuntimeError: the package is broken\n"
    )
    assert "/trainctl/" not in result.stderr
    (package / "__init__.py").write_text("")
    result = invoke("validate", config, "--build", "--set", "model.python=mynets.gone:Net")
    assert result.exit_code == 2
    assert result.stderr.endswith(
        "model.python: expected a module Python can import as mynets.gone, found no module "
        "named 'mynets.gone' (is its folder on PYTHONPATH?)\n"
    )
