"""Synchronous data parallelism over MPI (mpi4py): `trainctl train CONFIG --nproc N`.

N processes (ranks) each hold a full replica of the model. Every step each rank computes the
gradients of its shard of the global batch; one Allreduce over a flat buffer sums them and
divides by N, and every rank applies the same update, so the replicas stay identical (checked
by a checksum every `distributed.check_every` steps). Rank 0 owns the run folder.

`world` finds the ranks (size 1 without importing mpi4py), `reduce` is the gradient
Allreduce, `parallel` what the trainer calls (shards, agreed stops, replica checks, gathered
evaluation), `launch` starts `mpiexec` for `--nproc N`.
"""

from trainctl.distributed.world import DistributedError, World, current_world

__all__ = ["DistributedError", "World", "current_world"]
