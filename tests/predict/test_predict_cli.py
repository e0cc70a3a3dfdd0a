"""`trainctl predict` as a user runs it: output on stdout or in a file, and every input it
cannot take refused with one line naming the input the run expects, exit code 2."""

import csv
import io
import json

import numpy as np
import pytest
from predict_files import write_png
from rich.console import Console
from typer.testing import CliRunner

from trainctl.cli import app
from trainctl.predict.progress import PredictProgress

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def assert_refused(result, *fragments):
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert result.stdout == ""


def features(tmp_path, shape, name="new.npz", **arrays):
    x = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    np.savez(tmp_path / name, **(arrays or {"x": x}))
    return tmp_path / name


def test_csv_on_stdout_is_the_predictions_alone(npz_run, tmp_path):
    result = invoke("predict", npz_run, features(tmp_path, (20, 5)), "--top-k", "3")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 20 and list(rows[0]) == [
        "sample", "class", "probability", "class_2", "probability_2", "class_3", "probability_3",
    ]  # fmt: skip
    assert all(float(r["probability"]) >= float(r["probability_2"]) for r in rows)
    assert {r["class"] for r in rows} <= {"0", "1", "2", "3"}


@pytest.mark.parametrize("suffix", ["csv", "json"])
def test_output_file_format_follows_its_suffix(npz_run, tmp_path, suffix):
    target = tmp_path / f"out.{suffix}"
    result = invoke("predict", npz_run, features(tmp_path, (3, 5)), "-o", target, "-c", "last")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {target}\n"
    text = target.read_text()
    if suffix == "json":
        assert [r["sample"] for r in json.loads(text)] == [0, 1, 2]
    else:
        assert text.splitlines()[0] == "sample,class,probability" and len(text.splitlines()) == 4


def test_regression_values_and_a_named_npz_array(table_run, tmp_path):
    path = features(tmp_path, (4, 3), name="t.npz", a=np.ones((4, 3)), b=np.zeros(2))
    result = invoke("predict", table_run, path, "--key", "a", "--set", "mode=graph")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "sample,value" and len(lines) == 5
    assert len({line.split(",")[1] for line in lines[1:]}) == 1  # four equal rows


def test_resize_only_when_asked(plain_image_run, tmp_path):
    big = write_png(tmp_path / "big.png", (10, 10), 200)
    assert_refused(
        invoke("predict", plain_image_run, big),
        f"{big}: 10x10 pixels, but run {plain_image_run} takes 5x5 images: pass --resize",
    )
    result = invoke("predict", plain_image_run, big, "--resize")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].split(",")[1] in ("dark", "light")


def test_wrong_shape_names_the_expected_input(npz_run, tmp_path):
    path = features(tmp_path, (4, 7))
    assert_refused(
        invoke("predict", npz_run, path),
        f"{path}: expected float32 features: an array of shape (N, 5), found shape (4, 7)",
    )


def test_images_for_a_features_run_and_a_table_for_an_image_run(npz_run, image_run, tmp_path):
    picture = write_png(tmp_path / "p.png", (6, 6), 9)
    assert_refused(invoke("predict", npz_run, picture), "takes float32 features")
    table = tmp_path / "t.csv"
    table.write_text("1,2,3\n")
    assert_refused(
        invoke("predict", image_run, table),
        "takes float32 images of 6x6 pixels with 3 channel(s), NHWC in [0, 1]",
    )


def test_a_table_with_other_columns(table_run, tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("a,b\n1,2\n")
    assert_refused(
        invoke("predict", table_run, table),
        f"{table}: 2 columns, expected the run's 3 input columns (or one more: the target",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top-k", "9"], "--top-k must be between 1 and 4 (the classes), got 9"),
        (["-o", "out.txt"], "-o out.txt: cannot tell the format from its suffix"),
        (["--format", "xml"], "--format: expected one of csv, json, got 'xml'"),
        (["--key", "z"], "no array 'z' (option --key); the archive holds 'x'"),
        (["-c", "nowhere.safetensors"], "checkpoint nowhere.safetensors does not exist"),
    ],
)
def test_bad_options(npz_run, tmp_path, args, message):
    assert_refused(invoke("predict", npz_run, features(tmp_path, (2, 5)), *args), message)


def test_unknown_input_kind_and_missing_run(npz_run, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert_refused(invoke("predict", npz_run, notes), "expected an .npz archive, a .csv file")
    assert_refused(invoke("predict", tmp_path / "nope", notes), "is not a run folder")


@pytest.mark.parametrize(("terminal", "total", "shown"), [(True, 20, True), (True, 8, False),
                                                          (False, 20, False)])  # fmt: skip
def test_progress_bar_on_a_terminal_for_inputs_of_several_batches(terminal, total, shown):
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=terminal, width=80)
    bar = PredictProgress(total, 8, console)
    bar.advance(8)
    bar.close()
    assert (bar.bar is None) and (("predicting" in stream.getvalue()) == shown)
