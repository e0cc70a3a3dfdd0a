"""`trainctl train` and `eval` on a folder of images, as a user runs them: both modes, the class
names in the run and in eval's confusion matrix, bad files, and option errors at their line."""

import json
from pathlib import Path

import pytest
from data_files import write_image_folder
from typer.testing import CliRunner

from trainctl.cli import app

pytest.importorskip("PIL")
runner = CliRunner()

CONFIG = """\
name: pictures
mode: {mode}
data:
  dataset: image_folder
  path: images
  options: {{size: [6, 6], channels: {channels}{extra}}}
  batch_size: 4
  val_split: 0.25
  test_split: 0.25
model:
  layers: [flatten, linear: {{out: 3}}]
train: {{max_steps: 6, log_every: 2}}
"""


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def write_config(folder: Path, mode="eager", channels=3, extra="") -> Path:
    path = folder / "pictures.yaml"
    path.write_text(CONFIG.format(mode=mode, channels=channels, extra=extra))
    return path


@pytest.mark.parametrize(("mode", "channels"), [("eager", 3), ("graph", 1)])
def test_train_and_eval_on_an_image_folder(tmp_path, mode, channels):
    write_image_folder(tmp_path / "images", per_class=4)
    config = write_config(tmp_path, mode, channels)
    result = invoke("train", config, "--runs-root", tmp_path / "runs", "-q")
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 6
    assert summary["class_names"] == ["cat", "dog", "owl"]
    assert "skipped_bad_files" not in summary and 0 <= summary["data_wait_fraction"] <= 1
    result = invoke("eval", run, "--split", "test")
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "cat" in line)
    assert header.split() == ["┃", "┃", "cat", "┃", "dog", "┃", "owl", "┃"]
    report = json.loads((run / "eval-test.json").read_text())
    assert report["class_names"] == ["cat", "dog", "owl"] and report["samples"] == 3


def test_skip_bad_says_how_many_files_it_left_out(tmp_path):
    write_image_folder(tmp_path / "images", per_class=4)
    (tmp_path / "images" / "dog" / "notes.png").write_text("not an image")
    config = write_config(tmp_path, extra=", skip_bad: true")
    result = invoke("train", config, "--runs-root", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable file(s) (data.options.skip_bad), the first: " in result.output
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "summary.json").read_text())["skipped_bad_files"] == 1


def test_a_bad_image_stops_train_with_one_line_naming_it(tmp_path):
    write_image_folder(tmp_path / "images", per_class=4)
    bad = tmp_path / "images" / "dog" / "notes.png"
    bad.write_text("not an image")
    result = invoke("train", write_config(tmp_path), "--runs-root", tmp_path / "runs")
    assert result.exit_code == 2
    assert result.output.startswith(f"{bad}: not an image (no format Pillow reads)")
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_a_bad_option_is_an_error_at_its_line(tmp_path):
    write_image_folder(tmp_path / "images", per_class=1)
    config = write_config(tmp_path, channels=2)
    result = invoke("validate", config)
    assert result.exit_code == 2
    assert f"{config}:6: data.options.channels: expected one of 1, 3, found 2" in result.output
