"""metrics.jsonl: strict JSON lines, torn-line tolerance and repair, exact truncation on resume."""

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from trainctl.errors import RunFolderError
from trainctl.train import metrics_log
from trainctl.train.metrics_log import MetricsLog, read_metrics, repair_metrics, truncate_after_step

REPO = Path(__file__).resolve().parents[2]


def strict_lines(path):
    """Every line parsed as standard JSON (NaN, Infinity refused)."""
    return [json.loads(line, parse_constant=pytest.fail) for line in path.read_text().splitlines()]


def write_log(path, records):
    with MetricsLog(path) as log:
        for record in records:
            log.append(record)


def train_records(steps):
    return [{"kind": "train", "step": s, "loss": 1.0 / s} for s in steps]


def test_append_then_read(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = train_records(range(1, 6)) + [{"kind": "eval", "step": 5, "accuracy": 0.5}]
    write_log(path, records)
    assert read_metrics(path) == records
    assert strict_lines(path) == records


def test_each_record_is_in_the_file_when_append_returns(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    log.append({"step": 1})
    assert read_metrics(path) == [{"step": 1}]
    log.append({"step": 2})
    assert read_metrics(path) == [{"step": 1}, {"step": 2}]
    log.close()


def test_non_finite_values_become_null(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_log(path, [{"step": 1, "loss": math.nan, "m": [math.inf, np.float32(-np.inf), 2.5]}])
    assert strict_lines(path) == [{"step": 1, "loss": None, "m": [None, None, 2.5]}]


def test_numpy_values_are_plain_numbers(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_log(path, [{"step": np.int64(3), "loss": np.float32(0.25), "v": np.array([1, 2])}])
    assert strict_lines(path) == [{"step": 3, "loss": 0.25, "v": [1, 2]}]


def test_a_record_must_be_a_mapping(tmp_path):
    with pytest.raises(TypeError, match="a metrics record is a mapping, got list"):
        MetricsLog(tmp_path / "m.jsonl").append([1, 2])


def test_fsync_every_n_records_and_on_close(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(metrics_log.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    log = MetricsLog(tmp_path / "m.jsonl", fsync_every=3)
    for step in range(7):
        log.append({"step": step})
        assert len(synced) == (step + 1) // 3
    log.close()
    assert len(synced) == 3  # after records 3 and 6, and the 7th on close
    log.close()
    assert len(synced) == 3


def test_fsync_every_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="fsync_every must be >= 1, got 0"):
        MetricsLog(tmp_path / "m.jsonl", fsync_every=0)


def test_write_failure_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "m.jsonl"

    def full_disk(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(metrics_log, "write_all", full_disk)
    with pytest.raises(RunFolderError) as info:
        MetricsLog(path).append({"step": 1})
    assert str(info.value) == f"cannot write {path}: No space left on device"


def test_torn_last_line_is_skipped_and_repaired(tmp_path):
    path = tmp_path / "m.jsonl"
    write_log(path, train_records([1, 2]))
    good = path.read_bytes()
    torn = b'{"kind": "train", "step": 3, "lo'
    path.write_bytes(good + torn)
    assert read_metrics(path) == train_records([1, 2])
    assert repair_metrics(path) == len(torn)
    assert path.read_bytes() == good
    assert repair_metrics(path) == 0


def test_a_file_that_is_all_torn_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"step": 1')
    assert read_metrics(path) == []
    assert repair_metrics(path) == 10
    assert path.read_bytes() == b""


def test_repair_finds_the_last_newline_across_chunks(tmp_path):
    path = tmp_path / "m.jsonl"
    write_log(path, [{"step": 1, "blob": "x" * 100_000}])
    good = path.read_bytes()
    path.write_bytes(good + b"y" * 150_000)  # a torn tail longer than one read chunk
    assert repair_metrics(path) == 150_000
    assert path.read_bytes() == good


def test_repair_of_a_missing_file_is_nothing(tmp_path):
    assert repair_metrics(tmp_path / "none.jsonl") == 0
    assert not (tmp_path / "none.jsonl").exists()


def test_appending_after_a_crash_repairs_first(tmp_path):
    path = tmp_path / "m.jsonl"
    write_log(path, train_records([1, 2]))
    with open(path, "ab") as file:
        file.write(b'{"step": 3, "lo')
    write_log(path, train_records([3]))
    assert read_metrics(path) == train_records([1, 2, 3])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"step": 2, "loss": }', "line 2 is not valid JSON"),
        (b"[1, 2]", "line 2: expected a JSON object, found list"),
        (b'{"step": 2, "loss": NaN', "line 2 is not valid JSON"),
        (b"\xff\xfe", "line 2 is not valid JSON"),
    ],
)
def test_corrupt_middle_line_is_a_clear_error(tmp_path, line, message):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"step": 1}\n' + line + b'\n{"step": 3}\n')
    with pytest.raises(RunFolderError, match=message) as info:
        read_metrics(path)
    assert str(path) in str(info.value)


def test_blank_lines_are_ignored(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"step": 1}\n\n  \n{"step": 2}\n')
    assert read_metrics(path) == [{"step": 1}, {"step": 2}]


def test_reading_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(RunFolderError, match="cannot read .*none.jsonl: No such file"):
        read_metrics(tmp_path / "none.jsonl")


def test_truncate_after_step_keeps_earlier_lines_byte_for_byte(tmp_path):
    path = tmp_path / "m.jsonl"
    records = []
    for step in range(1, 11):
        records.append({"kind": "train", "step": step, "loss": 1 / step})
        if step % 4 == 0:
            records.append({"kind": "eval", "step": step, "accuracy": step / 10})
    write_log(path, [{"kind": "header", "note": "no step"}, *records])
    lines = path.read_bytes().splitlines(keepends=True)
    # header, steps 1-4, eval at 4, step 5 = the first 7 lines
    assert truncate_after_step(path, 5) == len(lines) - 7
    assert path.read_bytes() == b"".join(lines[:7])
    assert [r.get("step") for r in read_metrics(path)] == [None, 1, 2, 3, 4, 4, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]


def test_truncate_drops_a_torn_tail_even_when_no_record_goes(tmp_path):
    path = tmp_path / "m.jsonl"
    write_log(path, train_records([1, 2]))
    good = path.read_bytes()
    path.write_bytes(good + b'{"step": 3')
    assert truncate_after_step(path, 10) == 0
    assert path.read_bytes() == good


def test_truncate_leaves_an_untouched_file_alone(tmp_path):
    path = tmp_path / "m.jsonl"
    write_log(path, train_records([1, 2]))
    before = path.stat().st_ino
    assert truncate_after_step(path, 2) == 0
    assert path.stat().st_ino == before  # not rewritten


def test_truncate_of_a_missing_file_is_nothing(tmp_path):
    assert truncate_after_step(tmp_path / "none.jsonl", 3) == 0


@pytest.mark.parametrize("step", ['"5"', "5.0", "true", "null"])
def test_truncate_refuses_non_integer_steps(tmp_path, step):
    path = tmp_path / "m.jsonl"
    path.write_text(f'{{"step": 1}}\n{{"step": {step}}}\n')
    with pytest.raises(RunFolderError, match='line 2: "step" must be an integer'):
        truncate_after_step(path, 3)


def test_a_log_opened_before_truncation_appends_to_the_new_file(tmp_path):
    """The trainer makes its MetricsLog first, then truncates on resume: nothing is lost."""
    path = tmp_path / "m.jsonl"
    write_log(path, train_records(range(1, 9)))
    log = MetricsLog(path)
    truncate_after_step(path, 4)
    log.append({"kind": "train", "step": 5, "loss": 0.0})
    log.close()
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 5]


KILLED_WRITER = """
import sys
from trainctl.train.metrics_log import MetricsLog
log = MetricsLog(sys.argv[1], fsync_every=1000)
step = 0
while True:
    step += 1
    log.append({"step": step, "payload": "x" * (step % 5000)})
"""


def test_sigkill_mid_run_leaves_every_line_parseable(tmp_path):
    path = tmp_path / "m.jsonl"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while (
            not path.exists() or path.stat().st_size < 2_000_000
        ) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    records = read_metrics(path)
    assert len(records) > 100
    assert [r["step"] for r in records] == list(range(1, len(records) + 1))
    assert all(r["payload"] == "x" * (r["step"] % 5000) for r in records)
    repair_metrics(path)
    assert read_metrics(path) == records
