"""The `threads` setting: BLAS limits applied, and `auto` sharing the CPUs between trainings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from trainctl.train import threads
from trainctl.train.threads import Registration, ThreadControl, controlled_threads


@pytest.fixture
def share(tmp_path, monkeypatch):
    """A private registry of running trainings, so other tests and processes do not count."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setattr(threads, "RECOUNT_EVERY_S", 0.0)
    return threads.share_folder()


def blas_threads() -> set[int]:
    np.ones(1) @ np.ones(1)  # BLAS is loaded with NumPy; threadpoolctl reports its pools
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_usable_cpus_follows_the_affinity_mask():
    assert threads.usable_cpus() == len(os.sched_getaffinity(0))


def test_a_number_is_applied_to_blas_and_restored_after(share):
    before = blas_threads()
    with controlled_threads(1) as control:
        assert blas_threads() == {1}
        assert control.registration is None  # a fixed number does not take part in sharing
    assert blas_threads() == before
    assert control.report()["used"] == [1]


def test_auto_alone_uses_every_usable_cpu(share):
    with controlled_threads("auto") as control:
        assert control.threads == threads.usable_cpus()
        assert blas_threads() == {threads.usable_cpus()}


def test_auto_shares_the_cpus_and_takes_them_back(share):
    other = Registration(share)
    control = ThreadControl("auto", cpus=4)
    control.start()
    try:
        assert control.threads == 2
        third = Registration(share)
        control.check()
        assert control.threads == 1  # 4 // 3
        third.close()
        other.close()
        control.check()
        assert control.threads == 4
        assert control.report() == {"setting": "auto", "usable_cpus": 4, "used": [1, 2, 4]}
    finally:
        control.stop()
    assert not list(share.iterdir())  # nothing left behind


def test_a_file_nobody_holds_is_not_counted_and_is_removed(share):
    mine = Registration(share)
    stale = share / "12345-1.lock"
    stale.touch()
    assert mine.running() == 1
    assert not stale.exists()
    mine.close()


def test_a_killed_training_stops_counting_at_once(share):
    code = (
        "import sys, time; from pathlib import Path; from trainctl.train.threads import "
        "Registration; Registration(Path(sys.argv[1])); print('ready', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(share)], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == b"ready"
        mine = Registration(share)
        assert mine.running() == 2
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        deadline = time.monotonic() + 5
        while mine.running() != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert mine.running() == 1
        mine.close()
    finally:
        child.kill()
        child.wait()


def test_a_run_takes_its_share_and_records_it(share, tmp_path):
    from typer.testing import CliRunner

    from trainctl.cli import app

    config = Path(__file__).parents[2] / "configs" / "digits_mlp.yaml"
    other = Registration(share)  # another training is running on this machine
    try:
        result = CliRunner().invoke(
            app,
            ["train", str(config), "--run-dir", str(tmp_path / "run"), "--quiet",
             "--set", "train.max_steps=3", "--set", "train.epochs=null"],
        )  # fmt: skip
    finally:
        other.close()
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    cpus = threads.usable_cpus()
    assert summary["threads"] == {
        "setting": "auto",
        "usable_cpus": cpus,
        "used": [max(1, cpus // 2)],
    }
    assert list(share.iterdir()) == []  # the run's own entry is gone
