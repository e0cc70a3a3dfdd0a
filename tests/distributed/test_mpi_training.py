"""Data-parallel training in real MPI jobs of 2 ranks on this machine.

Two ranks must train the same model as one process with the same global batch. Not bit for
bit: the mean gradient of 32 samples is summed in another order (two means of 16, then their
mean), and float64 rounding differs in the last bits; hence a tolerance of 1e-12 relative.
The replicas themselves must be exactly equal: `distributed.check_every: 1` makes the run
compare their checksums after every step and fail if they differ.
"""

import pytest
from mpi_jobs import (
    assert_same_training,
    finished,
    losses,
    mpiexec,
    only_run,
    summary,
    train_job,
    trainctl,
    write_config,
)


@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_two_ranks_train_as_one_process_with_the_same_global_batch(tmp_path, mode):
    mpiexec()
    one, _, _ = train_job(tmp_path, "one", "--set", f"mode={mode}")
    # eager through the launcher, graph under a user's own mpiexec: the same command line
    if mode == "eager":
        two, out, err = train_job(tmp_path, "two", "--set", f"mode={mode}", "--nproc", "2")
    else:
        two, out, err = train_job(tmp_path, "two", "--set", f"mode={mode}", under_mpiexec=2)
    assert_same_training(one, two)
    assert out.count("completed: 12 steps") == 1, out  # rank 0 alone reports
    assert summary(two)["world_size"] == 2
    assert summary(two)["distributed"]["allreduce_calls"] == 12
    assert summary(two)["threads"]["used"] == [1]  # 2 cores / 2 ranks
    assert "world_size" not in summary(one)


def _files(run):
    """The run's files by path, TensorBoard's (named by time, host and pid) by their folder."""
    files = {}
    for path in run.rglob("*"):
        if path.is_file():
            name = path.relative_to(run).as_posix()
            files[name.split(".out.tfevents.")[0]] = path
    return files


BATCH_NORM_DROPOUT = (
    "--set",
    "model.layers=[flatten, {linear: {out: 32}}, batch_norm, relu, {dropout: {p: 0.3}}, "
    "{linear: {out: 10}}]",
    "--set",
    "mode=graph",
)


CNN = """
name: dp-cnn
seed: 3
dtype: float64
data: {dataset: digits, batch_size: 32, val_split: 0.2}
model:
  layers:
    - conv2d: {out: 8, kernel: 3, padding: 1}
    - relu
    - max_pool2d: {kernel: 2}
    - flatten
    - linear: {out: 10}
optimizer: {name: adam, lr: 0.003, weight_decay: 0.01}
train: {max_steps: 10, log_every: 1, eval_every: 5, drop_last: true}
distributed: {check_every: 1}
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_four_ranks_train_a_cnn_with_adam_and_weight_decay_as_one_process(tmp_path, mode):
    mpiexec()
    config = write_config(tmp_path, CNN)
    runs = {}
    for name, nproc in (("one", "1"), ("four", "4")):
        process = trainctl(
            "train", str(config), "--runs-root", str(tmp_path / name), "--nproc", nproc,
            "--set", f"mode={mode}", cwd=tmp_path,
        )  # fmt: skip
        code, out, err = finished(process, timeout=120)
        assert code == 0, out + err
        runs[name] = only_run(tmp_path / name)
    assert_same_training(runs["one"], runs["four"])


def test_only_rank_0_writes(tmp_path):
    """The job leaves the files one process leaves, each written once (rank 1 adds no line
    to a log), and nothing outside its run folder. With dropout each rank draws its own
    masks, BatchNorm normalises with each shard's statistics and averages the running ones,
    and the replicas still stay equal (checked after every step)."""
    mpiexec()
    write_config(tmp_path)
    before = set(tmp_path.rglob("*"))
    two, _, _ = train_job(tmp_path, "two", "--nproc", "2", *BATCH_NORM_DROPOUT)
    assert {p for p in set(tmp_path.rglob("*")) - before if two not in p.parents} == {
        tmp_path / "two",
        two,
    }
    one, _, _ = train_job(tmp_path, "one", *BATCH_NORM_DROPOUT)
    assert losses(one) != losses(two)
    files_one, files_two = _files(one), _files(two)
    assert files_two.keys() == files_one.keys()
    for name in ("metrics.jsonl", "train.log"):
        lines = files_two[name].read_text().splitlines()
        assert len(lines) == len(files_one[name].read_text().splitlines()), name


@pytest.mark.parametrize("under_mpiexec", [0, 2])
def test_a_global_batch_that_does_not_split_is_one_message_and_exit_2(tmp_path, under_mpiexec):
    """The launcher refuses it before any rank starts; under a user's mpiexec every rank finds
    it and rank 0 alone says so."""
    if under_mpiexec:
        mpiexec()
    config = write_config(tmp_path)
    nproc = () if under_mpiexec else ("--nproc", "2")
    process = trainctl(
        "train", str(config), "--set", "data.batch_size=33", *nproc,
        cwd=tmp_path, under_mpiexec=under_mpiexec,
    )  # fmt: skip
    code, out, err = finished(process)
    assert code == 2
    assert err.strip().splitlines() == [
        "--set data.batch_size=33: data.batch_size: the global batch 33 must split evenly "
        "among the 2 processes (--nproc 2): use a multiple of 2"
    ]
    assert not (tmp_path / "runs").exists()
