"""Faults in real MPI jobs: signals to the launcher, a rank killed mid-step or while rank 0
writes a checkpoint, and resumes on the same or another number of processes.

A kill that must land at one exact moment is not timed: the test-only site hook of the
single-process kill harness (tests/faults/killpoint_site) holds rank 0 in the middle of a
checkpoint write and creates a marker file, and the test kills rank 1 once the marker exists.
"""

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
from mpi_jobs import (
    assert_same_training,
    environment,
    finished,
    losses,
    mpiexec,
    only_run,
    summary,
    train_job,
    trainctl,
    weights,
    write_config,
)

from trainctl.train.checkpoint import load_checkpoint

KILLPOINT_SITE = Path(__file__).parents[1] / "faults" / "killpoint_site"
JOB_END_S = 60  # generous: the machine may be loaded; a hang still fails the test


def _long_job(tmp_path, checkpoint_every, *arguments, env=None, steps=12):
    """A 2-rank job that would train for long, returned once it has logged `steps` steps
    (or, with `env` holding a kill point, once rank 0 stopped there); the process, the
    config file and the runs folder."""
    mpiexec()
    config = write_config(tmp_path)
    runs = tmp_path / "runs"
    long_run = (
        "--set",
        "train.max_steps=100000",
        "--set",
        f"train.checkpoint_every={checkpoint_every}",
    )
    process = trainctl(
        "train", str(config), "--runs-root", str(runs), "--nproc", "2", *long_run, *arguments,
        cwd=tmp_path, env=env,
    )  # fmt: skip
    if env is None:
        _wait_for(lambda: _logged_steps(runs) >= steps, process, f"{steps} logged steps")
    return process, config, runs


def _logged_steps(runs):
    found = list(runs.glob("*/metrics.jsonl")) if runs.exists() else []
    return len(losses(found[0].parent)) if found else 0


def _wait_for(condition, process, what):
    deadline = time.monotonic() + JOB_END_S
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the job ended before {what}: {out}{err}")
        assert time.monotonic() < deadline, f"no {what} in {JOB_END_S} s"
        time.sleep(0.02)


def _resume(tmp_path, run, steps, *arguments):
    resumed = trainctl(
        "train", "--resume", str(run), "--set", f"train.max_steps={steps}", *arguments,
        cwd=tmp_path,
    )  # fmt: skip
    code, out, err = finished(resumed, timeout=JOB_END_S)
    assert code == 0, out + err


def _held(tmp_path, point, rank=None):
    """The environment that stops the job's processes (or only `rank`) at `point` of the
    kill-point site hook, and the marker file that appears when one got there."""
    marker = tmp_path / "held"
    env = {
        "PYTHONPATH": os.pathsep.join([str(KILLPOINT_SITE), environment()["PYTHONPATH"]]),
        "TRAINCTL_KILLPOINT": point,
        "TRAINCTL_KILLPOINT_MARKER": str(marker),
    }
    if rank is not None:
        env["TRAINCTL_KILLPOINT_RANK"] = str(rank)
    return env, marker


def _rank_pid(marker: str, rank: int) -> int:
    """The pid of `rank` of the job whose command line holds `marker`."""
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in command and f"PMI_RANK={rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no rank {rank} running with {marker}")


def _kill_rank_1(process, config, runs):
    """SIGKILL rank 1 of the job: the whole job must end within seconds (MPI's launcher
    takes the other ranks down); the job's run folder."""
    os.kill(_rank_pid(str(config), 1), signal.SIGKILL)
    killed = time.monotonic()
    code, out, err = finished(process, timeout=JOB_END_S)
    assert time.monotonic() - killed < 10, out + err
    assert code != 0
    return only_run(runs)


def _checkpoint_step(run, tag="last"):
    checkpoint = load_checkpoint(run / "checkpoints" / f"{tag}.safetensors")
    return checkpoint.trainer_state["trainer"]["step"]


@pytest.mark.parametrize(
    "signum",
    [
        pytest.param(signal.SIGTERM, id="SIGTERM"),
        pytest.param(signal.SIGINT, id="SIGINT", marks=pytest.mark.slow),
    ],
)
def test_a_signal_to_the_launcher_stops_every_rank_after_a_checkpoint_and_a_resume_on_one_process_goes_on(  # noqa: E501
    tmp_path, signum
):
    process, _, runs = _long_job(tmp_path, checkpoint_every=1000)
    process.send_signal(signum)
    code, out, err = finished(process, timeout=JOB_END_S)
    run = only_run(runs)
    stopped = summary(run)
    assert code == 128 + signum, out + err
    assert stopped["status"] == "interrupted" and stopped["signal"] == signum.name
    assert stopped["resume_command"].endswith("--nproc 2")
    assert losses(run)[-1][0] == stopped["steps"]  # the stop's checkpoint and its last log line
    assert _checkpoint_step(run) == stopped["steps"]
    _resume(tmp_path, run, stopped["steps"] + 5)
    straight, _, _ = train_job(
        tmp_path, "straight", "--set", f"train.max_steps={stopped['steps'] + 5}"
    )
    assert_same_training(straight, run)


def test_sigkill_of_one_rank_mid_step_ends_the_job_within_seconds_and_keeps_the_checkpoint(
    tmp_path,
):
    process, config, runs = _long_job(tmp_path, checkpoint_every=5)
    run = _kill_rank_1(process, config, runs)
    assert _checkpoint_step(run) % 5 == 0  # checkpoints/last reads back whole
    _resume(tmp_path, run, 30)
    straight, _, _ = train_job(tmp_path, "straight", "--set", "train.max_steps=30")
    assert_same_training(straight, run)


def test_sigkill_of_rank_1_while_rank_0_writes_a_checkpoint_keeps_the_last_one_and_resumes_exactly(
    tmp_path,
):
    """Checkpoints go out at steps 4 (last), 6 (best, the first evaluation) and 8 (last):
    rank 0 stops halfway through the bytes of the third, rank 1 is killed then. The job ends,
    checkpoints/last still holds step 4, and the resumed job logs bit for bit what an
    uninterrupted job on the same 2 ranks logs."""
    hold, marker = _held(tmp_path, "checkpoint-data:3")
    process, config, runs = _long_job(tmp_path, 4, env=hold)
    _wait_for(marker.exists, process, "rank 0 writing its third checkpoint")
    run = _kill_rank_1(process, config, runs)
    (torn,) = (run / "checkpoints").glob(".last.safetensors.*.tmp")  # the write it cut short
    assert torn.stat().st_size > 0
    assert _checkpoint_step(run) == 4 and _checkpoint_step(run, "best") == 6
    assert [step for step, _ in losses(run)][-1] >= 8  # logged before the checkpoint
    _resume(tmp_path, run, 14, "--nproc", "2")
    assert not list((run / "checkpoints").glob("*.tmp"))
    straight, _, _ = train_job(tmp_path, "straight", "--nproc", "2", "--set", "train.max_steps=14")
    assert_same_training(straight, run, rtol=0)


def test_a_job_stopped_on_2_ranks_resumes_on_4_and_then_on_1_as_if_never_stopped(tmp_path):
    """The data cursor counts global batches, which do not depend on the number of ranks:
    the resumed job trains on exactly the samples the uninterrupted one would. (train.drop_last:
    sync BatchNorm on 4 ranks needs a last batch that splits into 4.)"""
    drop_last = ("--set", "train.drop_last=true")
    process, _, runs = _long_job(tmp_path, 1000, *drop_last)
    process.send_signal(signal.SIGTERM)
    code, out, err = finished(process, timeout=JOB_END_S)
    assert code == 128 + signal.SIGTERM, out + err
    run = only_run(runs)
    stopped = summary(run)["steps"]
    _resume(tmp_path, run, stopped + 4, "--nproc", "4")
    assert summary(run)["world_size"] == 4 and summary(run)["steps"] == stopped + 4
    _resume(tmp_path, run, stopped + 8)
    assert "world_size" not in summary(run)
    straight, _, _ = train_job(
        tmp_path, "straight", *drop_last, "--set", f"train.max_steps={stopped + 8}"
    )
    assert_same_training(straight, run)
    assert weights(run).keys() == weights(straight).keys()


def test_a_rank_stopped_outside_mpi_aborts_the_job_after_the_timeout_naming_it(tmp_path):
    """Rank 1 stops before its 10th step (held by the site hook, then SIGSTOP: alive, never
    in MPI). Rank 0 waits in the step's first collective (the synchronised BatchNorm of the test
    model's forward pass) for distributed.timeout_s, then
    the job ends with a message naming rank 1, and checkpoints/last (step 8) stays intact."""
    hold, marker = _held(tmp_path, "train-step:10", rank=1)
    timeout = ("--set", "distributed.timeout_s=5")
    process, config, runs = _long_job(tmp_path, 4, *timeout, env=hold)
    _wait_for(marker.exists, process, "rank 1 before its 10th step")
    stuck = _rank_pid(str(config), 1)
    os.kill(stuck, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        code, out, err = finished(process, timeout=JOB_END_S)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stuck, signal.SIGKILL)
    assert 5 <= time.monotonic() - stopped < 5 + 15, out + err
    assert code != 0
    message = (
        "step 10: rank 0 waited 5 s (distributed.timeout_s) in the synchronised BatchNorm "
        "statistics for rank 1, which never reached it: stopped (SIGSTOP) or stuck outside "
        "MPI; the run stops here and checkpoints/last (step 8) is kept"
    )
    assert f"rank 0: {message}; aborting the job" in err, err
    run = only_run(runs)
    assert summary(run)["status"] == "failed" and summary(run)["error"] == message
    assert _checkpoint_step(run) == 8


def test_a_closed_output_stops_every_rank_after_a_checkpoint_with_the_exit_code_of_sigpipe(
    tmp_path,
):
    """`trainctl train ... --nproc 2 | head`: the reader going away stops the job as SIGTERM
    would (a resumable run), not as mpiexec would (ranks killed mid-step, the run 'running')."""
    process, _, runs = _long_job(tmp_path, checkpoint_every=1000)
    process.stdout.close()  # the launcher's next write of a logged step finds no reader
    process.wait(timeout=JOB_END_S)
    err = process.stderr.read()
    assert process.returncode == 128 + signal.SIGPIPE, err
    assert "Traceback" not in err and "BrokenPipe" not in err
    stopped = summary(only_run(runs))
    assert stopped["status"] == "interrupted"
    assert _checkpoint_step(only_run(runs)) == stopped["steps"]
