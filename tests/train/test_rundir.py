"""Run folders: unique names under concurrency, safe names only, clear errors, summary.json."""

import json
import math
import multiprocessing
import os
import re
import threading
from datetime import datetime, timedelta, timezone

import pytest

from trainctl.errors import RunFolderError
from trainctl.train.rundir import RunFolder, list_runs

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


def make_run(path_or_run):
    run = path_or_run if isinstance(path_or_run, RunFolder) else RunFolder(path_or_run)
    run.config_path.write_text("name: x\n")
    return run


def test_create_names_the_folder_by_utc_time_and_lays_it_out(tmp_path):
    run = RunFolder.create(tmp_path / "runs", "mnist-mlp")
    assert re.fullmatch(r"mnist-mlp-\d{8}-\d{6}", run.path.name)
    stamp = datetime.strptime(run.path.name[-15:], "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc)
    assert abs(datetime.now(timezone.utc) - stamp) < timedelta(minutes=1)
    assert run.path.parent == tmp_path / "runs"
    assert sorted(p.name for p in run.path.iterdir()) == ["checkpoints", "tensorboard"]
    assert run.checkpoints_dir.is_dir() and run.events_dir.is_dir()


def test_create_converts_a_local_time_to_utc(tmp_path):
    local = NOW.astimezone(timezone(timedelta(hours=5, minutes=30)))
    run = RunFolder.create(tmp_path, "x", now=local)
    assert run.path.name == "x-20240506-070809"


def test_file_properties(tmp_path):
    run = RunFolder(tmp_path / "r")
    assert run.config_path == tmp_path / "r" / "config.yaml"
    assert run.metrics_path == tmp_path / "r" / "metrics.jsonl"
    assert run.summary_path == tmp_path / "r" / "summary.json"
    assert run.log_path == tmp_path / "r" / "train.log"
    assert run.checkpoints_dir == tmp_path / "r" / "checkpoints"
    assert run.events_dir == tmp_path / "r" / "tensorboard"
    assert run.checkpoint_path("last") == tmp_path / "r" / "checkpoints" / "last.safetensors"
    assert run.checkpoint_path("best") == tmp_path / "r" / "checkpoints" / "best.safetensors"
    with pytest.raises(RunFolderError, match="unknown checkpoint 'first': expected one of last"):
        run.checkpoint_path("first")


def test_taken_names_get_a_suffix(tmp_path):
    names = [RunFolder.create(tmp_path, "exp", now=NOW).path.name for _ in range(3)]
    assert names == ["exp-20240506-070809", "exp-20240506-070809-2", "exp-20240506-070809-3"]


def test_a_file_with_the_name_is_skipped_not_replaced(tmp_path):
    (tmp_path / "exp-20240506-070809").write_text("keep me")
    run = RunFolder.create(tmp_path, "exp", now=NOW)
    assert run.path.name == "exp-20240506-070809-2"
    assert (tmp_path / "exp-20240506-070809").read_text() == "keep me"


def _create_after(barrier, root):
    barrier.wait()
    return RunFolder.create(root, "race", now=NOW).path.name


def _create_and_report(barrier, root, queue):
    queue.put(_create_after(barrier, root))


def test_threads_starting_at_once_get_distinct_folders(tmp_path):
    count = 8
    barrier = threading.Barrier(count)
    names = []
    threads = [
        threading.Thread(target=lambda: names.append(_create_after(barrier, tmp_path)))
        for _ in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = {"race-20240506-070809"} | {f"race-20240506-070809-{n}" for n in range(2, count + 1)}
    assert set(names) == expected and len(names) == count


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)
def test_processes_starting_at_once_get_distinct_folders(tmp_path):
    count = 6
    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(count), context.Queue()
    processes = [
        context.Process(target=_create_and_report, args=(barrier, tmp_path, queue))
        for _ in range(count)
    ]
    for process in processes:
        process.start()
    names = [queue.get(timeout=60) for _ in range(count)]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert len(set(names)) == count
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    for name in names:
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["checkpoints", "tensorboard"]


@pytest.mark.parametrize(
    "name", ["../x", "/abs", "a/b", "..", ".", "", "a\\b", "x\0y", "with space", "tab\t", "ü", None]
)
def test_unsafe_names_are_refused(tmp_path, name):
    root = tmp_path / "runs"
    with pytest.raises(RunFolderError, match="is not a safe folder name"):
        RunFolder.create(root, name)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_overlong_names_are_refused(tmp_path):
    with pytest.raises(RunFolderError, match="1 to 200 letters"):
        RunFolder.create(tmp_path, "a" * 201)
    assert (
        RunFolder.create(tmp_path, "a" * 200, now=NOW).path.name == "a" * 200 + "-20240506-070809"
    )


def test_a_planted_symlink_is_not_followed(tmp_path):
    runs, outside = tmp_path / "runs", tmp_path / "outside"
    runs.mkdir()
    outside.mkdir()
    (runs / "exp-20240506-070809").symlink_to(outside, target_is_directory=True)
    (runs / "exp-20240506-070809-2").symlink_to(tmp_path / "elsewhere")  # dangling
    run = RunFolder.create(runs, "exp", now=NOW)
    assert run.path == runs / "exp-20240506-070809-3"
    assert not run.path.is_symlink() and run.path.resolve().parent == runs.resolve()
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "elsewhere").exists()


def test_runs_root_is_created(tmp_path):
    run = RunFolder.create(tmp_path / "a" / "b" / "runs", "x", now=NOW)
    assert run.path == tmp_path / "a" / "b" / "runs" / "x-20240506-070809"


def test_runs_root_that_is_a_file_is_an_error(tmp_path):
    (tmp_path / "runs").write_text("")
    with pytest.raises(RunFolderError, match="cannot create the runs folder .*runs: File exists"):
        RunFolder.create(tmp_path / "runs", "x")


def test_create_at_new_or_empty_folder(tmp_path):
    fresh = RunFolder.create_at(tmp_path / "deep" / "run")
    assert fresh.checkpoints_dir.is_dir() and fresh.events_dir.is_dir()
    (tmp_path / "empty").mkdir()
    assert RunFolder.create_at(tmp_path / "empty").path == tmp_path / "empty"


def test_create_at_refuses_used_folders_and_files(tmp_path):
    RunFolder.create_at(tmp_path / "run")
    with pytest.raises(RunFolderError, match="it is not empty"):
        RunFolder.create_at(tmp_path / "run")
    (tmp_path / "file").write_text("")
    with pytest.raises(RunFolderError, match="exists and is not a directory"):
        RunFolder.create_at(tmp_path / "file")


def test_open_checks_it_is_a_run_folder(tmp_path):
    run = make_run(RunFolder.create(tmp_path, "x"))
    assert RunFolder.open(run.path) == run
    with pytest.raises(RunFolderError, match="missing is not a run folder: it does not exist"):
        RunFolder.open(tmp_path / "missing")
    (tmp_path / "file").write_text("")
    with pytest.raises(RunFolderError, match="file is not a run folder: it is not a directory"):
        RunFolder.open(tmp_path / "file")
    (tmp_path / "plain").mkdir()
    with pytest.raises(RunFolderError, match="plain is not a run folder: it has no config.yaml"):
        RunFolder.open(tmp_path / "plain")


def test_summary_round_trip_with_non_finite_as_null(tmp_path):
    run = RunFolder.create(tmp_path, "x")
    run.write_summary({"status": "completed", "final": {"loss": math.nan, "acc": 0.9}})
    assert run.read_summary() == {"status": "completed", "final": {"loss": None, "acc": 0.9}}
    assert "NaN" not in run.summary_path.read_text()
    run.write_summary({"status": "failed"})
    assert run.read_summary() == {"status": "failed"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"status": "running",\n  "x": }',
            "is not valid JSON: Expecting value at line 2 column 8",
        ),
        ('["a list"]', "expected a JSON object, found list"),
        (b"\xff\xfe", "is not UTF-8 text"),
    ],
)
def test_malformed_summary_is_a_clear_error(tmp_path, text, message):
    run = RunFolder.create(tmp_path, "x")
    if isinstance(text, bytes):
        run.summary_path.write_bytes(text)
    else:
        run.summary_path.write_text(text)
    with pytest.raises(RunFolderError, match=re.escape(message)) as info:
        run.read_summary()
    assert str(run.summary_path) in str(info.value)


def test_missing_summary_is_a_clear_error(tmp_path):
    run = RunFolder.create(tmp_path, "x")
    with pytest.raises(RunFolderError, match="summary.json does not exist"):
        run.read_summary()


def test_list_runs_oldest_first_skipping_non_runs(tmp_path):
    late = make_run(RunFolder.create(tmp_path, "b", now=NOW + timedelta(hours=1)))
    early = make_run(RunFolder.create(tmp_path, "z", now=NOW))
    early_2 = make_run(RunFolder.create(tmp_path, "z", now=NOW))
    same_second = make_run(RunFolder.create(tmp_path, "a", now=NOW))
    explicit = make_run(RunFolder.create_at(tmp_path / "custom"))
    between = (NOW + timedelta(minutes=30)).timestamp()
    os.utime(explicit.config_path, (between, between))
    RunFolder.create(tmp_path, "no-config", now=NOW)  # never got its config.yaml
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "x-20241399-000000").mkdir()  # an impossible date: its config's time counts
    impossible = make_run(tmp_path / "x-20241399-000000")
    before = (NOW - timedelta(days=1)).timestamp()
    os.utime(impossible.config_path, (before, before))
    assert list_runs(tmp_path) == [impossible, same_second, early, early_2, explicit, late]


def test_list_runs_of_a_missing_root_is_empty(tmp_path):
    assert list_runs(tmp_path / "none") == []
    (tmp_path / "file").write_text("")
    with pytest.raises(RunFolderError, match="is not a directory"):
        list_runs(tmp_path / "file")


def test_summary_is_written_as_strict_json(tmp_path):
    run = RunFolder.create(tmp_path, "x")
    run.write_summary({"a": [1.0, -math.inf]})
    assert json.loads(run.summary_path.read_text(), parse_constant=pytest.fail) == {
        "a": [1.0, None]
    }
