"""`validate --build` runs train's own set-up, minus the training: a config it passes gets
past every check train makes before its first step, and a transform that does not fit the
data is an error at its file and line, from both commands, leaving no run folder."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from trainctl.cli import app
from trainctl.train import prepare, trainer

runner = CliRunner()

NORMALIZE_ON_3_FEATURES = """\
name: blobs3
data:
  dataset: blobs
  options: {features: 3}
  transforms:
    - normalize: {mean: [0.0, 0.0], std: [1.0, 1.0]}
model:
  layers: [linear: {out: 3}]
train: {max_steps: 2}
"""
FLIP_ON_TABLES = """\
name: flipped-spirals
data:
  dataset: spirals
  transforms: [random_flip]
model:
  layers: [linear: {out: 3}]
train: {max_steps: 2}
"""
CASES = [
    (NORMALIZE_ON_3_FEATURES, "c.yaml:6: data.transforms[0].normalize: ",
     "mean has 2 values, but the samples have 3 features"),
    (FLIP_ON_TABLES, "c.yaml:4: data.transforms[0].random_flip: ",
     "random_flip needs NHWC images, but the samples have shape (2,)"),
]  # fmt: skip


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(("text", "where", "what"), CASES, ids=["normalize", "random_flip"])
def test_validate_build_and_train_refuse_a_transform_that_does_not_fit(
    tmp_path, monkeypatch, text, where, what
):
    monkeypatch.chdir(tmp_path)
    Path("c.yaml").write_text(text)
    assert invoke("validate", "c.yaml").exit_code == 0  # the names and values are right
    for command in (["validate", "c.yaml", "--build"], ["train", "c.yaml", "--runs-root", "runs"]):
        result = invoke(*command)
        assert result.exit_code == 2, (command, result.output)
        assert result.output.startswith(where) and what in result.output, result.output
        assert "Traceback" not in result.output
    assert not Path("runs").exists()


def test_a_transform_set_on_the_command_line_is_named_by_its_override(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("c.yaml").write_text(FLIP_ON_TABLES.replace("[random_flip]", "[]"))
    result = invoke("validate", "c.yaml", "--build", "--set", "data.transforms=[random_crop]")
    assert result.exit_code == 2
    assert result.output.startswith("--set data.transforms=[random_crop]: data.transforms[0]")


def test_validate_build_and_train_share_one_set_up(tmp_path, monkeypatch):
    """Whatever train checks before its first step, validate --build checks too."""
    calls = []
    real = prepare.prepare_training

    def spy(config, *rest):
        calls.append(config.name)
        return real(config, *rest)

    monkeypatch.setattr(prepare, "prepare_training", spy)
    monkeypatch.setattr(trainer, "prepare_training", spy)
    monkeypatch.chdir(tmp_path)
    Path("c.yaml").write_text(FLIP_ON_TABLES.replace("[random_flip]", "[]"))
    assert invoke("validate", "c.yaml", "--build").exit_code == 0
    assert invoke("train", "c.yaml", "--runs-root", "runs", "-q").exit_code == 0
    assert calls == ["flipped-spirals", "flipped-spirals"]
