"""What the trainer calls in a data-parallel run: shards, agreed stops, replica checks and
evaluation over every rank's part of a split.

Each rank reads the same global batch (the loader's batches depend only on seed, epoch and
index) and keeps its contiguous shard of it, so the samples, their order and their random
transforms are those of one process with the same `data.batch_size`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from trainctl.backend import to_host
from trainctl.distributed.collectives import Collectives
from trainctl.distributed.reduce import GradientReducer, RankMean
from trainctl.distributed.world import World
from trainctl.errors import TrainctlError


class ReplicaDivergenceError(TrainctlError):
    """The replicas no longer hold the same weights: the run cannot go on."""

    exit_code = 1


def shard_bounds(count: int, rank: int, size: int) -> tuple[int, int]:
    """[start, stop) of rank's part when `count` items are split into `size` contiguous
    parts whose lengths differ by at most one (the first parts get the extra items)."""
    base, extra = divmod(count, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class AgreedStop:
    """A stop signal as the ranks agree on it. A rank's own SIGINT/SIGTERM travels with the
    next gradient Allreduce and every rank sees it after that same step, so all of them
    checkpoint and stop at one step; a signal never stops one rank alone."""

    def __init__(self, local: Any, reducer: GradientReducer) -> None:
        self.reducer = reducer
        reducer.local_stop = local

    def __bool__(self) -> bool:
        return self.reducer.agreed_signal is not None

    @property
    def signal_name(self) -> str | None:
        return self.reducer.agreed_signal


class DataParallel:
    """One rank's share of a data-parallel run."""

    def __init__(self, world: World, bucket_mb: float, check_every: int, timeout_s: float) -> None:
        self.world = world
        self.collectives = Collectives(world.comm, timeout_s)
        self.reducer = GradientReducer(self.collectives, int(bucket_mb * 2**20))
        self.check_every = check_every
        self.place = (world.rank, world.size)

    def shard(self, inputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """This rank's part of a global batch; its gradient weight follows its size."""
        count = len(inputs)
        start, stop = shard_bounds(count, *self.place)
        self.reducer.weight = (stop - start) * self.world.size / count
        return inputs[start:stop], targets[start:stop]

    def own_seed(self, seed: int) -> int:
        """The dropout seed of this rank: rank 0 keeps the run's (its checkpoint's), the others
        derive their own, so the ranks' shards do not all draw the same masks."""
        rank = self.world.rank
        return seed if rank == 0 else (seed + rank * 0x9E3779B97F4A7C15) % 2**63

    def synchronise_batch_norm(self, model: Any) -> bool:
        """Give every `batch_norm` with `sync: true` the mean over the ranks; whether any."""
        synced = [m for m in model.modules() if getattr(m, "sync", False)]
        for module in synced:
            module.across = RankMean(self.collectives)
        return bool(synced)

    def average_buffers(self, model: Any) -> None:
        """BatchNorm on several ranks: each rank normalises with its own shard's batch
        statistics (as DDP does by default), and after every step the running statistics are
        averaged over the ranks, so the replicas stay identical. The running mean is then the
        one a single process keeps; the running variance is the mean of the shards'."""
        buffers = list(model.named_buffers())
        if not buffers:
            return
        arrays = [np.asarray(to_host(tensor.data)) for _, tensor in buffers]
        flat = np.concatenate([array.ravel() for array in arrays]).astype(np.float64)
        total = np.empty_like(flat)
        self.collectives.allreduce_sum(flat, total, "the averaging of BatchNorm's statistics")
        total /= self.world.size
        averaged, offset = {}, 0
        for (name, _), array in zip(buffers, arrays, strict=True):
            averaged[name] = total[offset : offset + array.size].reshape(array.shape)
            offset += array.size
        model.load_state_dict(averaged, strict=False)

    def check_replicas(self, step: int, arrays: Iterable[tuple[str, Any]]) -> None:
        """Every `check_every` steps: a checksum of the weights and optimizer state on every
        rank, compared; replicas that differ stop the run (they would no longer be one model)."""
        if step % self.check_every:
            return
        digest = hashlib.blake2b(digest_size=16)
        for name, array in arrays:
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(to_host(array)).tobytes())
        digests = self.collectives.allgather(digest.hexdigest(), "the replica checksum")
        differing = [rank for rank, d in enumerate(digests) if d != digests[0]]
        if differing:
            raise ReplicaDivergenceError(
                f"step {step}: the replicas diverged: the weights or optimizer state of rank(s) "
                f"{', '.join(map(str, differing))} differ from rank 0's (checksums "
                f"{digests[0][:12]} vs {digests[differing[0]][:12]}); every rank must apply "
                "the same update, so the run stops here"
            )

    def gather(self, part: list[Any]) -> list[Any]:
        """Every rank's list, concatenated in rank order, on every rank."""
        gathered = self.collectives.allgather(part, "the gathering of evaluation outputs")
        return [item for ranks_part in gathered for item in ranks_part]

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (the others pass None)."""
        return self.collectives.bcast(value, "the start from rank 0's state")

    def report(self) -> dict[str, Any]:
        """What summary.json records of the job."""
        seconds = self.reducer.seconds
        report = {"world_size": self.world.size, "mpi": self.world.library(),
                  "allreduce_calls": len(seconds)}  # fmt: skip
        if seconds:  # rank 0's time in the calls, waiting for the slowest rank included
            report["allreduce_ms"] = {
                "median": round(float(np.median(seconds)) * 1e3, 4),
                "p90": round(float(np.percentile(seconds, 90)) * 1e3, 4),
            }
        return report


def check_data_parallel(
    config: Any, size: int, train_samples: int | None = None, sync_batch_norm: bool = False
) -> None:
    """A config N ranks can train: a global batch that splits into N equal shards, and a last
    partial batch with a sample for each rank (an equal share for a synchronised BatchNorm,
    which averages the shards' statistics). Without `train_samples` it checks what the
    config alone decides (the launcher does, before starting the ranks)."""
    from trainctl.config import ConfigError, config_issue

    batch = config.data.batch_size
    issues = []
    if batch % size:
        issues.append(
            config_issue(
                config,
                ("data", "batch_size"),
                f"the global batch {batch} must split evenly among the {size} processes "
                f"(--nproc {size}): use a multiple of {size}",
            )
        )
    rest = 0 if train_samples is None else train_samples % batch
    if rest < size:
        problem = f"fewer than the {size} processes"
    else:
        problem = f"which batch_norm with sync: true must split evenly among {size} processes"
    if rest and (rest < size or sync_batch_norm and rest % size) and not config.train.drop_last:
        issues.append(
            config_issue(
                config,
                ("train", "drop_last"),
                f"the last batch of an epoch holds {rest} of the {train_samples} training "
                f"samples, {problem}: set train.drop_last: true or change data.batch_size",
            )
        )
    if issues:
        raise ConfigError(issues)
