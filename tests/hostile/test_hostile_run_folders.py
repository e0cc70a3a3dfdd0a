"""Run folders with a missing or malformed config.yaml, summary.json or metrics.jsonl, through
`trainctl eval`, `runs`, `runs show` and `train --resume`: exit 2, every line of the message
naming the damaged file, and not one byte of the folder changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hostile_helpers import ROOT, TALLY, error_lines, invoke, snapshot, train_small_run

from trainctl.config.document import MAX_DEPTH
from trainctl.train.rundir import RunFolder


@pytest.fixture(scope="module")
def template_run(tmp_path_factory) -> Path:
    return train_small_run(tmp_path_factory.mktemp("runs"), "train.log_every=1")


@pytest.fixture
def runs(template_run, tmp_path) -> Path:
    """A runs folder holding one copy of the template run."""
    shutil.copytree(template_run, tmp_path / "runs" / template_run.name)
    return tmp_path / "runs"


def only_run(runs: Path) -> Path:
    (run,) = runs.iterdir()
    return run


def damage(path: Path, content: bytes | None) -> None:
    """Write `content` at `path`; None removes it; b"/" puts a folder in its place."""
    path.unlink()
    if content == b"/":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)


def assert_refused_naming(result, path: Path) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    lines = error_lines(result)
    assert lines and all(str(path) in line for line in lines), result.stderr


CONFIGS = {
    "missing": None,
    "a_folder": b"/",
    "empty": b"",
    "not_yaml": b"model: [unclosed\n",
    "a_list": b"- model\n",
    "unknown_key": (ROOT / "configs/digits_mlp.yaml").read_bytes() + b"colour: blue\n",
    "latin1": "name: caf\xe9\n".encode("latin-1"),
    "nul": b"name: a\x00\n",
    "python_tag": b"model: !!python/object/apply:os.system ['touch PWNED']\n",
    "alias_bomb": b"a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + b"".join(
        b"%c: &%c [*%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c]\n" % ((c, c) + (c - 1,) * 10)
        for c in range(ord("b"), ord("h"))
    ),
    "too_deep": b"model: " + b"[" * (MAX_DEPTH + 5) + b"]" * (MAX_DEPTH + 5) + b"\n",
    "too_large": b"# padding\n" * 200_000,
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
@pytest.mark.parametrize("command", ["eval", "resume"])
def test_a_damaged_config_yaml(runs, command, case):
    run = only_run(runs)
    path = run / "config.yaml"
    damage(path, CONFIGS[case])
    before = snapshot(runs)
    args = ["eval", run] if command == "eval" else ["train", "--resume", run, "-q"]
    TALLY["hostile run folders"] += 1
    result = invoke(*args)
    if case in ("missing", "a_folder"):  # then the folder is not a run folder
        assert_refused_naming(result, run)
        assert "config.yaml" in result.stderr
    else:
        assert_refused_naming(result, path)
    assert snapshot(runs) == before
    assert not Path("PWNED").exists()


def test_a_folder_without_config_yaml_is_not_a_run(runs):
    run = only_run(runs)
    damage(run / "config.yaml", None)
    before = snapshot(runs)
    TALLY["hostile run folders"] += 2
    result = invoke("runs", "--runs-root", runs)
    assert result.exit_code == 0 and "no runs in" in result.output
    assert_refused_naming(invoke("runs", "--runs-root", runs, "show", run.name), run)
    assert snapshot(runs) == before


SUMMARIES = {
    "missing": None,
    "a_folder": b"/",
    "empty": b"",
    "not_json": b'{"status": "completed",',
    "a_list": b"[]",
    "latin1": '{"status": "caf\xe9"}'.encode("latin-1"),
    "nested_deeply": b"[" * 100_000 + b"]" * 100_000,
    "steps_text": b'{"status": "completed", "steps": "many"}',
    "status_object": b'{"status": {"a": 1}}',
    "best_number": b'{"status": "completed", "best": 0.9}',
    "best_value_text": b'{"status": "completed", "best": {"metric": "acc", "value": "high"}}',
    "duration_text": b'{"status": "completed", "duration_s": "1h"}',
    "final_a_list": b'{"status": "completed", "final": [1]}',
    "final_val_text": b'{"status": "completed", "final": {"val": {"acc": "0.9"}}}',
    "step_time_list": b'{"status": "completed", "step_time_ms": [1, 2]}',
    "resumes_text": b'{"status": "completed", "resumes": "twice"}',
}


@pytest.mark.parametrize("case", sorted(SUMMARIES))
def test_a_damaged_summary_json_through_runs_and_runs_show(runs, case):
    """`runs` still lists every run (the damaged one as unreadable) and exits 2."""
    run = only_run(runs)
    healthy = runs / "other-run"
    shutil.copytree(run, healthy)
    path = run / "summary.json"
    damage(path, SUMMARIES[case])
    before = snapshot(runs)
    TALLY["hostile run folders"] += 2
    listed = invoke("runs", "--runs-root", runs)
    assert_refused_naming(listed, path)
    assert "unreadable" in listed.stdout and "other-run" in listed.stdout
    assert "completed" in listed.stdout
    assert_refused_naming(invoke("runs", "--runs-root", runs, "show", run.name), path)
    assert snapshot(runs) == before


def test_a_damaged_summary_json_through_resume(template_run, tmp_path):
    """A damaged summary.json refuses the resume before anything in the folder changes."""
    for case, content in sorted(SUMMARIES.items()):
        if content is None:
            continue  # a missing summary is allowed on resume: a run killed before writing one
        run = tmp_path / case
        shutil.copytree(template_run, run)
        path = run / "summary.json"
        damage(path, content)
        before = snapshot(run)
        TALLY["hostile run folders"] += 1
        assert_refused_naming(invoke("train", "--resume", run, "-q"), path)
        assert snapshot(run) == before


def test_hand_edited_summary_values_that_are_still_valid_render(runs):
    """Null where a number was, missing keys: shown as '-', not an error."""
    run = only_run(runs)
    summary = json.loads((run / "summary.json").read_text())
    summary.update(
        final=None,
        best={"metric": "val/accuracy"},
        step_time_ms={"median": None},
        duration_s=None,
        steps=None,
    )
    (run / "summary.json").write_text(json.dumps(summary))
    assert invoke("runs", "--runs-root", runs).exit_code == 0
    shown = invoke("runs", "--runs-root", runs, "show", run.name)
    assert shown.exit_code == 0, shown.output
    assert "accuracy - @ -" in shown.stdout and "median -, p90 -" in shown.stdout


METRICS = {
    "not_json": b'{"kind": "train", "step": 1, "loss": 2.3}\n{oops}\n',
    "a_list_line": b"[1, 2]\n",
    "latin1": b'{"kind": "train", "step": 1, "loss": 2.3, "note": "caf\xe9"}\n',
}


@pytest.mark.parametrize("case", sorted(METRICS))
@pytest.mark.parametrize("command", ["show", "resume"])
def test_a_damaged_metrics_jsonl(runs, command, case):
    run = only_run(runs)
    path = run / "metrics.jsonl"
    damage(path, METRICS[case])
    before = snapshot(runs)
    TALLY["hostile run folders"] += 1
    args = ["runs", "--runs-root", runs, "show", run.name]
    assert_refused_naming(
        invoke(*(args if command == "show" else ["train", "--resume", run])), path
    )
    assert snapshot(runs) == before


def test_train_records_of_the_wrong_type_are_left_out_of_the_curve(runs):
    run = only_run(runs)
    (run / "metrics.jsonl").write_text(
        '{"kind": "train", "step": 1, "loss": "high"}\n{"kind": "train", "loss": 2.0}\n'
        '{"kind": "train", "step": 3, "loss": true}\n{"kind": "train", "step": 4, "loss": 1.5}\n'
    )
    result = invoke("runs", "--runs-root", runs, "show", run.name)
    assert result.exit_code == 0, result.output
    assert "step None … 4" in result.stdout


def test_runs_root_that_is_a_file(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    TALLY["hostile run folders"] += 1
    assert_refused_naming(invoke("runs", "--runs-root", tmp_path / "runs"), tmp_path / "runs")


def test_a_run_folder_symlinked_to_elsewhere_is_read_not_written(runs, tmp_path):
    """`runs` follows a link to a run folder to read it; nothing is written through it."""
    outside = tmp_path / "outside"
    shutil.copytree(only_run(runs), outside)
    (runs / "linked").symlink_to(outside)
    before = snapshot(outside)
    result = invoke("runs", "--runs-root", runs)
    assert result.exit_code == 0 and "linked" in result.stdout
    assert snapshot(outside) == before
    assert RunFolder.open(runs / "linked").read_summary()["status"] == "completed"
