"""The parts of data parallelism that need no MPI job.

The gradient Allreduce inside a step runs on a stand-in communicator whose ranks all hold
this rank's gradients, so the mean is this rank's own and a step must come out exactly as
without data parallelism, in both modes, with clipping. Then shards, stop signals, the
replica check, dropout seeds, and the launcher's command line and missing mpiexec."""

import sys
import time

import numpy as np
import pytest
from echo_comm import EchoComm, echo_collectives
from mpi_jobs import write_config
from typer.testing import CliRunner

from trainctl import backend, nn, optim
from trainctl.backend import CPU
from trainctl.cli import _train_arguments, app
from trainctl.config import ConfigError, parse_config
from trainctl.distributed import World
from trainctl.distributed.collectives import Collectives, CollectiveTimeoutError
from trainctl.distributed.parallel import (
    DataParallel,
    ReplicaDivergenceError,
    check_data_parallel,
    shard_bounds,
)
from trainctl.distributed.reduce import GradientReducer
from trainctl.train.step import make_step


def _run(mode, reducer=None, grad_clip=None, batches=3):
    backend.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).to(CPU, np.float64)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = make_step(
        mode, model, nn.cross_entropy, opt, device=CPU, dtype=np.float64, grad_clip=grad_clip
    )
    step.gradient_reducer = reducer
    rng = np.random.default_rng(1)
    losses = [
        step.train(rng.standard_normal((4, 6)), rng.integers(0, 3, 4)) for _ in range(batches)
    ]
    return losses, model.state_dict()


@pytest.mark.parametrize("mode", ["eager", "graph"])
@pytest.mark.parametrize("grad_clip", [None, 0.05])
def test_a_step_with_the_allreduce_of_identical_replicas_is_the_step_without(mode, grad_clip):
    reducer = GradientReducer(echo_collectives(4), bucket_bytes=40)  # several buckets
    plain_losses, plain = _run(mode, grad_clip=grad_clip)
    losses, params = _run(mode, reducer, grad_clip)
    assert losses == plain_losses
    for name, array in plain.items():
        np.testing.assert_array_equal(params[name], array, err_msg=name)
    assert len(reducer.seconds) == 3  # one Allreduce per step


def test_a_shard_weight_scales_the_gradients_before_the_mean():
    reducer = GradientReducer(echo_collectives(2))
    reducer.weight = 0.5  # this rank holds half the samples the others do
    flat = np.arange(6.0)
    np.testing.assert_array_equal(reducer.allreduce_mean(np, flat), flat * 0.5)


def test_a_stop_signal_on_any_rank_is_agreed_by_the_allreduce():
    class Flag:
        signal_name = "SIGTERM"

    reducer = GradientReducer(echo_collectives(2))
    reducer.allreduce_mean(np, np.ones(3))
    assert reducer.agreed_signal is None
    reducer.local_stop = Flag()
    reducer.allreduce_mean(np, np.ones(3))
    assert reducer.agreed_signal == "SIGTERM"


@pytest.mark.parametrize("count", [1, 7, 8, 64])
def test_shards_cover_a_batch_in_order_and_differ_by_at_most_one(count):
    parts = [shard_bounds(count, rank, 3) for rank in range(3)]
    assert parts[0][0] == 0 and parts[-1][1] == count
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))
    sizes = [stop - start for start, stop in parts]
    assert max(sizes) - min(sizes) <= 1


class _Gathering(EchoComm):
    """A communicator stand-in whose other rank reports `theirs` to allgather."""

    def __init__(self, theirs):
        super().__init__(2)
        self.theirs = theirs

    def allgather(self, mine):
        return [mine, self.theirs if self.theirs is not None else mine]


def _parallel(theirs):
    return DataParallel(
        World(0, 2, 2, _Gathering(theirs)), bucket_mb=1, check_every=5, timeout_s=60
    )


def test_replicas_that_differ_stop_the_run_at_a_check_and_equal_ones_do_not():
    arrays = [("weight", np.ones(3))]
    _parallel(None).check_replicas(5, arrays)
    _parallel("0123456789abcdef").check_replicas(4, arrays)  # no check between the steps
    with pytest.raises(ReplicaDivergenceError, match=r"step 5: the replicas diverged: .* rank"):
        _parallel("0123456789abcdef").check_replicas(5, arrays)


def test_each_rank_draws_its_own_dropout_masks_and_rank_0_keeps_the_runs_seed():
    seeds = [
        DataParallel(World(rank, 3, 3, _Gathering(None)), 1, 1, 60).own_seed(7) for rank in range(3)
    ]
    assert seeds[0] == 7 and len(set(seeds)) == 3


def test_the_launcher_hands_the_ranks_the_train_command_line_it_was_given():
    import typer

    given = ["c.yaml", "-q", "--set", "a=1", "--set", "b=[1, 2]", "--nproc", "2", "--force"]
    context = typer.main.get_command(app).commands["train"].make_context("train", given)
    assert _train_arguments(context) == [
        "c.yaml", "--set", "a=1", "--set", "b=[1, 2]", "--force", "--quiet", "--nproc", "2",
    ]  # fmt: skip


def test_without_mpiexec_nproc_names_the_distributed_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    result = CliRunner().invoke(app, ["train", str(write_config(tmp_path)), "--nproc", "2"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"--nproc 2 starts its processes with MPI's mpiexec, found neither next to "
        f"{tmp_path / 'python'} nor on PATH: pip install 'trainctl[distributed]' "
        "(mpi4py and MPICH)"
    )


@pytest.mark.parametrize(
    ("samples", "sync", "message"),
    [
        (65, False, "holds 1 of the 65 training samples, fewer than the 2 processes"),
        (
            67,
            True,
            "holds 3 of the 67 training samples, which batch_norm with sync: true must "
            "split evenly among 2 processes",
        ),  # fmt: skip
    ],
)
def test_a_last_batch_the_ranks_cannot_share_is_refused_at_train_drop_last(samples, sync, message):
    config = parse_config("model: {layers: [flatten, {linear: {out: 10}}]}\n", "c.yaml")
    check_data_parallel(config, 2, 64, sync)  # no last batch
    check_data_parallel(config, 2, 67, False)  # 3 samples: 2 and 1
    with pytest.raises(ConfigError) as raised:
        check_data_parallel(config, 2, samples, sync)
    assert str(raised.value).endswith(
        f": train.drop_last: the last batch of an epoch {message}: set train.drop_last: true "
        "or change data.batch_size"
    )


class _Never:
    """A request that never completes: a peer that does not come."""

    def Test(self):  # noqa: N802 (mpi4py's name)
        return False


class _Absent(EchoComm):
    """A communicator stand-in in which this is `rank` of `size`, the ranks in `absent` never
    post their arrival notes, and the collective itself completes only when `completes`."""

    def __init__(self, rank, size, absent, completes=False):
        super().__init__(size)
        self.rank, self.absent, self.completes = rank, set(absent), completes

    def Get_rank(self):  # noqa: N802
        return self.rank

    def Irecv(self, buffer, source):  # noqa: N802
        return _Never() if source in self.absent else super().Irecv(buffer, source)

    def Ibarrier(self):  # noqa: N802
        return super().Ibarrier() if self.completes else _Never()


@pytest.mark.parametrize(
    ("rank", "absent", "waits", "message"),
    [
        (0, [2, 3], 1, " for ranks 2, 3, which never reached it: stopped (SIGSTOP) or stuck "
         "outside MPI"),
        (0, [], 1, ": every rank reached it, but it did not complete (a rank stopped in it)"),
        (2, [0], 1, " for rank 0, which never reached it: stopped (SIGSTOP) or stuck outside MPI"),
        (2, [], 2, ": rank 0 reached it but neither completed it nor reported who did not"),
    ],
)  # fmt: skip
def test_a_collective_that_does_not_complete_times_out_naming_the_ranks_that_never_came(
    rank, absent, waits, message
):
    """Rank 0 hears from every rank, the others from rank 0 only; a rank that heard from rank
    0 waits a second timeout for rank 0, which knows more, to report."""
    collectives = Collectives(_Absent(rank, 4, absent), timeout_s=0.05)
    started = time.monotonic()
    with pytest.raises(CollectiveTimeoutError) as raised:
        collectives.bcast("state", "the start")
    assert waits * 0.05 <= time.monotonic() - started < waits * 0.05 + 1
    assert str(raised.value) == (
        f"rank {rank} waited 0.05 s (distributed.timeout_s) in the start{message}"
    )


def test_a_sum_every_rank_reaches_completes_in_buckets():
    collectives = Collectives(_Absent(0, 4, []), timeout_s=0.05)
    send, received = np.arange(5.0), np.zeros(5)
    collectives.allreduce_sum(send, received, "a sum", per_message=2)
    np.testing.assert_array_equal(received, send * 4)
