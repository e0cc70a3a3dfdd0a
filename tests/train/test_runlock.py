"""The run folder's lock: one writer at a time, held by a live process only, never stale."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from trainctl.errors import RunFolderError
from trainctl.train.runlock import LOCK_NAME, RunLockedError, hold_run_lock, is_locked

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from trainctl.train.runlock import hold_run_lock
    with hold_run_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(60)
    """
)


@pytest.fixture
def holder(tmp_path):
    """A real second process holding the lock of `tmp_path` until it is killed."""
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline() == "held\n"
        yield process
    finally:
        process.kill()
        process.wait(timeout=30)


def test_a_second_writer_is_refused_naming_the_holders_pid(tmp_path, holder):
    assert is_locked(tmp_path)
    assert (tmp_path / LOCK_NAME).read_text() == f"{holder.pid}\n"
    with (
        pytest.raises(
            RunLockedError, match=rf"being trained by another process \(pid {holder.pid}\)"
        ),
        hold_run_lock(tmp_path),
    ):
        pass


def test_sigkill_of_the_holder_leaves_no_stale_lock(tmp_path, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert not is_locked(tmp_path)
    with hold_run_lock(tmp_path):
        assert is_locked(tmp_path)
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"


def test_release_unlocks_and_empties_the_file(tmp_path):
    with hold_run_lock(tmp_path):
        pass
    assert not is_locked(tmp_path)
    assert (tmp_path / LOCK_NAME).read_bytes() == b""
    with hold_run_lock(tmp_path):  # and it can be taken again
        pass


def test_asking_changes_nothing(tmp_path):
    assert not is_locked(tmp_path)
    assert list(tmp_path.iterdir()) == []  # a run from before locks gets no lock file


def test_a_planted_symlink_is_never_followed(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).symlink_to(target)
    with pytest.raises(RunFolderError, match=LOCK_NAME), hold_run_lock(run):
        pass
    assert target.read_text() == "keep me"
    assert not is_locked(run)
