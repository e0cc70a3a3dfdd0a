"""Run names and folder arguments cannot escape the runs folder, follow planted symlinks, or
collide: each hostile `--name`, config `name:`, `--run-dir` and RUN argument is refused with
exit 2 and creates nothing anywhere; trainings started in the same second get distinct
folders (real processes, released together)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hostile_helpers import ROOT, TALLY, assert_user_error, error_lines, invoke, snapshot

from trainctl.errors import RunFolderError
from trainctl.train.rundir import RunFolder

CONFIG = ROOT / "configs/digits_mlp.yaml"
SHORT = ["--set", "train.max_steps=1", "--set", "train.eval_every=1", "-q"]

ESCAPING_NAMES = [
    "..",
    ".",
    "../escape",
    "../../etc/x",
    "/tmp/abs",
    "/",
    "a/b",
    "a\\b",
    "runs/../../x",
    "a\x00b",
    "\x00",
    "x" * 201,
    "",
    " ",
    "name\n",
    "\nname",
    "~",
    "~/x",
    "$HOME",
    "a b",
    "ü",
    "a:b",
    "*",
    "a\u202eb",
    "%2e%2e%2f",
]


@pytest.fixture
def place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder (the cwd) with a runs folder in it; everything a run could write to,
    by a relative or a parent path, is under tmp_path."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path


@pytest.mark.parametrize("name", [n for n in ESCAPING_NAMES if n], ids=repr)
def test_a_hostile_name_is_refused_and_creates_nothing(place, name):
    """(An empty --name is no name: the config's is used.)"""
    before = snapshot(place)
    result = invoke("train", CONFIG, "--name", name, "--runs-root", "runs", *SHORT)
    TALLY["hostile names and paths"] += 1
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    (line,) = error_lines(result)
    assert "is not a safe folder name" in line
    assert snapshot(place) == before


@pytest.mark.parametrize("name", ESCAPING_NAMES, ids=repr)
def test_a_hostile_name_in_the_config_is_refused_by_validate_and_train(place, name):
    config = place / "work" / "config.yaml"
    config.write_text(CONFIG.read_text().replace("name: digits-mlp", f"name: {name!r}"))
    before = snapshot(place)
    TALLY["hostile names and paths"] += 1
    for args in (["validate", config], ["train", config, "--runs-root", "runs", *SHORT]):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert all(line.startswith(f"{config}:") for line in error_lines(result)), result.stderr
    assert snapshot(place) == before


@pytest.mark.parametrize("name", ["...", "-", "-rf", "_", "a.b-c_d", "x" * 200])
def test_odd_but_safe_names_stay_inside_the_runs_folder(place, name):
    result = invoke("train", CONFIG, "--name", name, "--runs-root", "runs", *SHORT)
    TALLY["hostile names and paths"] += 1
    assert result.exit_code == 0, result.output
    (run,) = (place / "work" / "runs").iterdir()
    assert run.name.startswith(name + "-") and run.is_dir() and not run.is_symlink()
    assert sorted(p.name for p in place.iterdir()) == ["work"]


def _hostile_run_dirs(place: Path) -> dict[str, Path]:
    (place / "a-file").write_text("keep me")
    (place / "full").mkdir()
    (place / "full" / "keep.txt").write_text("keep me")
    (place / "dangling").symlink_to(place / "nowhere")
    return {
        "nul": Path("run\x00dir"),
        "an_existing_file": place / "a-file",
        "a_folder_with_files": place / "full",
        "a_dangling_symlink": place / "dangling",
        "under_a_file": place / "a-file" / "run",
        "a_too_long_name": place / ("x" * 300),
    }


@pytest.mark.parametrize(
    "case",
    [
        "nul",
        "an_existing_file",
        "a_folder_with_files",
        "a_dangling_symlink",
        "under_a_file",
        "a_too_long_name",
    ],
)
def test_a_hostile_run_dir_is_refused_and_changes_nothing(place, case):
    target = _hostile_run_dirs(place)[case]
    before = snapshot(place)
    result = invoke("train", CONFIG, "--run-dir", target, *SHORT)
    TALLY["hostile names and paths"] += 1
    assert_refused(result)
    assert snapshot(place) == before


def assert_refused(result) -> None:
    """Exit 2 with one line, or (a NUL, which no real command line can hold) Typer's usage
    error for a path argument."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    if "embedded null byte" not in result.stderr:
        assert len(error_lines(result)) == 1, result.stderr


@pytest.mark.parametrize(
    "run", ["missing", "../../../etc", "/", "run\x00dir", "x" * 300, "a-file", ""], ids=repr
)
@pytest.mark.parametrize("command", ["eval", "show", "resume"])
def test_a_hostile_run_argument_is_refused_and_changes_nothing(place, command, run):
    (place / "work" / "a-file").write_text("keep me")
    before = snapshot(place)
    args = {
        "eval": ["eval", run],
        "show": ["runs", "--runs-root", "runs", "show", run],
        "resume": ["train", "--resume", run, "-q"],
    }[command]
    result = invoke(*args)
    TALLY["hostile names and paths"] += 1
    assert_refused(result)
    assert "is not a run folder" in result.stderr or "embedded null byte" in result.stderr
    assert snapshot(place) == before


# ---------------------------------------------------------------- planted symlinks


NOW = datetime(2026, 11, 23, 10, 15, 0, tzinfo=timezone.utc)


def test_symlinks_planted_at_the_next_names_are_never_followed(tmp_path):
    runs, outside = tmp_path / "runs", tmp_path / "outside"
    runs.mkdir()
    outside.mkdir()
    (runs / "exp-20261123-101500").symlink_to(outside)
    (runs / "exp-20261123-101500-2").symlink_to(tmp_path / "nowhere")  # dangling
    TALLY["hostile names and paths"] += 2
    run = RunFolder.create(runs, "exp", now=NOW)
    assert run.path == runs / "exp-20261123-101500-3"
    assert run.path.is_dir() and not run.path.is_symlink()
    assert list(outside.iterdir()) == [] and not (tmp_path / "nowhere").exists()


def test_train_never_writes_through_a_planted_symlink(place):
    """Links named as every folder the next 40 seconds could give, to an outside folder."""
    runs, outside = place / "work" / "runs", place / "outside"
    runs.mkdir()
    outside.mkdir()
    start = datetime.now(timezone.utc)
    for second in range(-1, 40):
        stamp = (start + timedelta(seconds=second)).strftime("%Y%m%d-%H%M%S")
        for suffix in ("", "-2"):
            (runs / f"digits-mlp-{stamp}{suffix}").symlink_to(outside)
            TALLY["hostile names and paths"] += 1
    result = invoke("train", CONFIG, "--runs-root", runs, *SHORT)
    assert result.exit_code == 0, result.output
    made = [p for p in runs.iterdir() if not p.is_symlink()]
    assert len(made) == 1 and made[0].name.endswith("-3")
    assert (made[0] / "checkpoints" / "last.safetensors").is_file()
    assert list(outside.iterdir()) == []


def test_a_runs_root_that_is_a_dangling_symlink_is_refused(place):
    (place / "work" / "runs").symlink_to(place / "elsewhere")
    before = snapshot(place)
    result = invoke("train", CONFIG, "--runs-root", "runs", *SHORT)
    TALLY["hostile names and paths"] += 1
    assert_user_error(result, "runs")
    assert snapshot(place) == before


# ---------------------------------------------------------------- same second, same name

_WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from trainctl.cli import app
    import trainctl.train.trainer  # everything imported before the start signal
    go, ready = Path(sys.argv[1]), Path(sys.argv[2])
    ready.touch()
    while not go.exists():
        time.sleep(0.001)
    app(sys.argv[3:], prog_name="trainctl")
    """
)


def test_trainings_started_in_the_same_second_get_distinct_folders(tmp_path):
    runs, count = tmp_path / "runs", 4
    go = tmp_path / "go"
    args = ["train", str(CONFIG), "--name", "same", "--runs-root", str(runs), *SHORT]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(go), str(tmp_path / f"ready-{i}"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        )
        for i in range(count)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(1 - time.time() % 1 + 0.01)  # just past a second boundary: a whole second
    go.touch()
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    TALLY["hostile names and paths"] += count
    folders = sorted(p.name for p in runs.iterdir())
    assert len(folders) == count and all(f.startswith("same-") for f in folders)
    stamps = {f.split("-")[1] + f.split("-")[2] for f in folders}
    assert len(stamps) < count, folders  # some did start in the same second
    for folder in folders:
        assert RunFolder.open(runs / folder).read_summary()["status"] == "completed"


def test_a_nul_in_a_folder_path_is_a_run_folder_error(tmp_path):
    """From Python (a command line cannot hold a NUL), and before anything is created."""
    with pytest.raises(RunFolderError, match="holds a NUL character"):
        RunFolder.create(f"{tmp_path}/runs\x00x", "exp")
    with pytest.raises(RunFolderError, match="holds a NUL character"):
        RunFolder.create_at(f"{tmp_path}/run\x00x")
    assert list(tmp_path.iterdir()) == []
