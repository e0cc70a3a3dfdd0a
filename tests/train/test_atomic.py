"""Atomic writes: the target is the old file or the new one, never half, never a temp left over."""

import errno
import json
import math
import os

import numpy as np
import pytest

from trainctl.errors import RunFolderError
from trainctl.train import atomic
from trainctl.train.atomic import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    finite_or_null,
    non_finite_path,
)


def leftovers(directory, keep):
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


def test_write_creates_and_replaces(tmp_path):
    target = tmp_path / "file.bin"
    atomic_write_bytes(target, b"first")
    assert target.read_bytes() == b"first"
    atomic_write_bytes(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"
    atomic_write_text(target, "héllo\n")
    assert target.read_text(encoding="utf-8") == "héllo\n"
    assert leftovers(tmp_path, {"file.bin"}) == []


def test_new_file_gets_the_usual_permissions(tmp_path):
    target = tmp_path / "file.txt"
    atomic_write_text(target, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def crash_after_half(fd, data):
    """A write that dies halfway, as a full disk or a killed writer would leave it."""
    os.write(fd, data[: len(data) // 2])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_crash_mid_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    atomic_write_json(target, {"step": 1})
    monkeypatch.setattr(atomic, "write_all", crash_after_half)
    with pytest.raises(RunFolderError) as info:
        atomic_write_json(target, {"step": 2, "padding": "x" * 1000})
    message = str(info.value)
    assert str(target) in message and "No space left on device" in message
    assert json.loads(target.read_text()) == {"step": 1}
    assert leftovers(tmp_path, {"state.json"}) == []


def test_failing_fsync_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "file.bin"
    atomic_write_bytes(target, b"old")

    def failing_fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    with pytest.raises(RunFolderError, match="Input/output error"):
        atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path, {"file.bin"}) == []


def test_missing_directory_is_a_clear_error(tmp_path):
    target = tmp_path / "no" / "such" / "file.txt"
    with pytest.raises(RunFolderError, match="No such file or directory") as info:
        atomic_write_text(target, "x")
    assert str(target) in str(info.value)


def test_directory_in_the_way_leaves_no_temp(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(RunFolderError, match="taken"):
        atomic_write_text(tmp_path / "taken", "x")
    assert leftovers(tmp_path, {"taken"}) == []
    assert list((tmp_path / "taken").iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_unwritable_directory_keeps_the_old_file(tmp_path):
    target = tmp_path / "file.txt"
    atomic_write_text(target, "old")
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(RunFolderError, match="Permission denied"):
            atomic_write_text(target, "new")
    finally:
        tmp_path.chmod(0o700)
    assert target.read_text() == "old"
    assert leftovers(tmp_path, {"file.txt"}) == []


def test_permission_denied_is_a_clear_error(tmp_path, monkeypatch):
    """The same failure as an unwritable directory, injected so that it also runs as root."""
    target = tmp_path / "file.txt"
    atomic_write_text(target, "old")
    real_open = os.open

    def denying_open(path, flags, *args):
        if flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(atomic.os, "open", denying_open)
    with pytest.raises(RunFolderError) as info:
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert str(info.value) == f"cannot write {target}: Permission denied"
    assert target.read_text() == "old"
    assert leftovers(tmp_path, {"file.txt"}) == []


def test_json_is_indented_and_keeps_key_order(tmp_path):
    target = tmp_path / "s.json"
    atomic_write_json(target, {"zeta": 1, "alpha": [1, 2], "mid": {"b": 1, "a": 2}})
    text = target.read_text()
    assert (
        text == json.dumps({"zeta": 1, "alpha": [1, 2], "mid": {"b": 1, "a": 2}}, indent=2) + "\n"
    )


def test_json_writes_numpy_values_as_numbers(tmp_path):
    target = tmp_path / "s.json"
    atomic_write_json(target, {"loss": np.float32(0.5), "n": np.int64(3), "v": np.arange(3)})
    assert json.loads(target.read_text()) == {"loss": 0.5, "n": 3, "v": [0, 1, 2]}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, np.float32("nan")])
def test_json_refuses_non_finite_numbers_naming_the_key(tmp_path, bad):
    target = tmp_path / "s.json"
    atomic_write_json(target, {"ok": 1})
    with pytest.raises(RunFolderError, match=r"key final\.val\.1 is NaN or infinite"):
        atomic_write_json(target, {"final": {"val": [0.5, bad]}})
    assert json.loads(target.read_text()) == {"ok": 1}


def test_json_refuses_unserializable_values(tmp_path):
    with pytest.raises(RunFolderError, match="object is not JSON serializable"):
        atomic_write_json(tmp_path / "s.json", {"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_finite_or_null_replaces_only_non_finite_floats():
    value = {"a": [1.5, math.nan, {"b": -math.inf}], "c": np.float64("inf"), "d": 2, "e": "nan"}
    assert finite_or_null(value) == {"a": [1.5, None, {"b": None}], "c": None, "d": 2, "e": "nan"}
    assert finite_or_null(np.array([1.0, np.nan])) == [1.0, None]


def test_non_finite_path_finds_nothing_in_finite_values():
    assert non_finite_path({"a": [1.0, 2], "b": {"c": np.float32(3)}, "d": None}) is None
    assert non_finite_path(math.nan) == "the value"
    assert non_finite_path(np.array([[1.0], [np.inf]])) == "key 1.0"
