"""TensorBoard event files: written here, read back here and by TensorBoard itself."""

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trainctl.errors import RunFolderError
from trainctl.train import events
from trainctl.train.events import (
    EventWriter,
    crc32c,
    decode_event,
    encode_event,
    read_scalars,
    read_tfrecords,
    tfrecord,
)

REPO = Path(__file__).resolve().parents[2]


def f32(value):
    return float(np.float32(value))


def tensorboard_scalars(directory):
    """{tag: [(step, value)]} as TensorBoard's own loader sees the directory."""
    accumulator_module = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    accumulator = accumulator_module.EventAccumulator(
        str(directory), size_guidance={accumulator_module.SCALARS: 0}
    )
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def write_losses(directory, steps, scale=1.0):
    with EventWriter(directory) as writer:
        for step in steps:
            writer.scalars(step, {"train/loss": scale / step, "train/lr": 0.1 * step})


def test_crc32c_known_values():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value of CRC-32C
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720, 32 bytes of zeros


def test_event_encoding_round_trip():
    data = encode_event(12.5, 2**40, scalars={"a": 1.25, "b/c": -3.0})
    assert decode_event(data) == (2**40, [("a", 1.25), ("b/c", -3.0)], False)
    assert decode_event(encode_event(1.0, 7, session_start=True)) == (7, [], True)


def test_scalars_read_back_by_both_readers(tmp_path):
    write_losses(tmp_path, range(1, 21))
    expected = {
        "train/loss": [(s, f32(1.0 / s)) for s in range(1, 21)],
        "train/lr": [(s, f32(0.1 * s)) for s in range(1, 21)],
    }
    assert read_scalars(tmp_path) == expected
    assert tensorboard_scalars(tmp_path) == expected


def test_wall_time_is_stored(tmp_path):
    accumulator_module = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    with EventWriter(tmp_path) as writer:
        writer.scalars(3, {"x": 1.0}, wall_time=1_700_000_000.25)
    accumulator = accumulator_module.EventAccumulator(str(tmp_path))
    accumulator.Reload()
    assert [e.wall_time for e in accumulator.Scalars("x")] == [1_700_000_000.25]


def test_a_resume_drops_the_stale_tail_in_both_readers(tmp_path):
    write_losses(tmp_path, range(1, 11))  # the first session logged to step 10, then died
    with EventWriter(tmp_path) as writer:  # resumed from the checkpoint of step 6
        writer.restart_at(7)
        for step in range(7, 13):
            writer.scalars(step, {"train/loss": 100.0 / step})
    expected = [(s, f32(1.0 / s)) for s in range(1, 7)] + [
        (s, f32(100.0 / s)) for s in range(7, 13)
    ]
    assert read_scalars(tmp_path)["train/loss"] == expected
    assert read_scalars(tmp_path)["train/lr"] == [(s, f32(0.1 * s)) for s in range(1, 7)]
    assert tensorboard_scalars(tmp_path)["train/loss"] == expected


def test_files_made_in_the_same_second_never_clobber_each_other(tmp_path, monkeypatch):
    monkeypatch.setattr(events.time, "time", lambda: 1_700_000_000.0)
    first, second = EventWriter(tmp_path), EventWriter(tmp_path)
    first.scalars(1, {"a": 1.0})
    second.scalars(2, {"a": 2.0})
    first.close()
    second.close()
    assert len(list(tmp_path.iterdir())) == 2
    assert read_scalars(tmp_path) == {"a": [(1, 1.0), (2, 2.0)]}


def test_nothing_is_created_before_the_first_event(tmp_path):
    writer = EventWriter(tmp_path / "tensorboard")
    writer.scalars(1, {})
    writer.close()
    assert not (tmp_path / "tensorboard").exists()
    with EventWriter(tmp_path / "tensorboard") as writer:
        writer.scalars(1, {"a": np.float32(0.5)})
        assert writer.path.parent == tmp_path / "tensorboard"
        assert "tfevents" in writer.path.name
    assert read_scalars(tmp_path / "tensorboard") == {"a": [(1, 0.5)]}


def test_events_are_in_the_file_before_flush(tmp_path):
    writer = EventWriter(tmp_path)
    writer.scalars(1, {"a": 1.0})
    assert read_scalars(tmp_path) == {"a": [(1, 1.0)]}
    writer.flush()
    writer.close()


def test_non_finite_values_are_kept(tmp_path):
    with EventWriter(tmp_path) as writer:
        writer.scalars(1, {"loss": float("nan"), "big": float("inf")})
    scalars = read_scalars(tmp_path)
    assert np.isnan(scalars["loss"][0][1]) and scalars["big"] == [(1, float("inf"))]


@pytest.mark.parametrize("step", [-1, 1.5, True, "3"])
def test_bad_steps_are_refused(tmp_path, step):
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        EventWriter(tmp_path).scalars(step, {"a": 1.0})


def test_bad_tags_and_times_are_refused(tmp_path):
    writer = EventWriter(tmp_path)
    with pytest.raises(ValueError, match="tag must be a non-empty string"):
        writer.scalars(1, {"": 1.0})
    with pytest.raises(ValueError, match="wall_time must be a finite number"):
        writer.scalars(1, {"a": 1.0}, wall_time=float("nan"))


def test_a_torn_last_record_is_ignored_by_both_readers(tmp_path):
    write_losses(tmp_path, range(1, 6))
    (path,) = tmp_path.iterdir()
    record = tfrecord(encode_event(0.0, 6, scalars={"train/loss": 0.0}))
    with open(path, "ab") as file:
        file.write(record[: len(record) - 3])
    scalars = read_scalars(tmp_path)
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3, 4, 5]
    assert tensorboard_scalars(tmp_path) == scalars


@pytest.mark.parametrize("where", ["length", "data"])
def test_a_damaged_record_is_a_clear_error(tmp_path, where):
    write_losses(tmp_path, range(1, 6))
    (path,) = tmp_path.iterdir()
    data = bytearray(path.read_bytes())
    first = 12 + struct.unpack("<Q", data[:8])[0] + 4  # the second record starts here
    data[first + (2 if where == "length" else 20)] ^= 0x10
    path.write_bytes(data)
    with pytest.raises(RunFolderError, match=f"is damaged: bad record .*at byte {first}"):
        read_scalars(tmp_path)


def test_read_tfrecords_checks_framing(tmp_path):
    path = tmp_path / "records"
    path.write_bytes(tfrecord(b"one") + tfrecord(b"") + tfrecord(b"three" * 100))
    assert list(read_tfrecords(path)) == [b"one", b"", b"three" * 100]


def test_files_written_by_tensorboardx_are_read(tmp_path):
    tensorboardx = pytest.importorskip("tensorboardX")
    with tensorboardx.SummaryWriter(str(tmp_path)) as writer:
        for step in range(1, 4):
            writer.add_scalar("loss", 1.0 / step, step)
        writer.add_histogram("weights", np.arange(10.0), 3)  # a value kind that is skipped
    assert read_scalars(tmp_path) == {"loss": [(s, f32(1.0 / s)) for s in range(1, 4)]}


def test_a_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(RunFolderError, match="cannot read .*none: No such file"):
        read_scalars(tmp_path / "none")


def test_write_failure_is_a_clear_error(tmp_path, monkeypatch):
    def full_disk(fd, data):
        raise OSError(28, os.strerror(28))

    writer = EventWriter(tmp_path)
    writer.scalars(1, {"a": 1.0})
    monkeypatch.setattr(events, "write_all", full_disk)
    with pytest.raises(RunFolderError, match="cannot write .*tfevents.*: No space left on device"):
        writer.scalars(2, {"a": 2.0})
    writer.close()


def test_storage_modules_do_not_import_heavy_or_forbidden_packages():
    code = (
        "import sys\n"
        "import trainctl.train.atomic, trainctl.train.rundir, trainctl.train.metrics_log\n"
        "import trainctl.train.checkpoint, trainctl.train.events, trainctl.train.environment\n"
        "bad = [m for m in ('torch', 'tensorflow', 'jax', 'tensorboardX', 'tensorboard', "
        "'google.protobuf') if m in sys.modules]\n"
        "print(bad)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
