"""The gradient Allreduce: one flat buffer, summed over the ranks and divided by their number.

`GradientReducer.reduce(loss, grads)` is written with ops, like gradient clipping, so eager
mode runs it on the tensors after `backward()` and graph mode records it into the compiled
step between the gradients and the update: the gradients (and the loss) are concatenated into
one flat buffer, the `allreduce_mean` op sums it across the ranks, and slices of the result
are the gradients the update (and clipping) sees.

The buffer also carries, in two trailing slots, whether a rank was sent SIGINT or SIGTERM, so
every rank learns of a stop after the same step (see `parallel.AgreedStop`). It is sent in
buckets of at most `bucket_bytes` (large models: no single huge message), all in flight at
once and watched by a deadline (`collectives`); there is no overlap of communication with the
backward pass, the buffer goes out once all gradients exist.

A rank's shard may be smaller than the others' (a last partial batch): its gradient, a mean
over its own samples, is weighted by shard / (batch / N) before the sum, so the result is the
mean over the whole batch, as one process computes it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from trainctl.autograd import ops
from trainctl.backend import to_host
from trainctl.distributed.collectives import Collectives

SIGNALS = ("SIGINT", "SIGTERM")


class AllreduceMean(ops.Op):
    """The sum over the ranks of a flat array, divided by the number of ranks.

    Not differentiable: it runs on gradients, after the backward pass. The reducer (an
    attribute) keeps the host state of the step: the shard weight and the stop signals.
    """

    differentiable = False
    forward = staticmethod(
        lambda xp, flat, reducer, out=None: _into(xp, reducer.allreduce_mean(xp, flat), out)
    )
    infer = staticmethod(lambda flat, reducer: ops.Spec(tuple(flat.shape), flat.dtype))


def _into(xp: Any, result: Any, out: Any) -> Any:
    """`result`, or a copy of it in the planned buffer `out` when graph mode gives one."""
    if out is None:
        return result
    xp.copyto(out, result)
    return out


def allreduce_mean(flat: ops.Operand, reducer: GradientReducer) -> ops.Operand:
    return ops.apply(AllreduceMean, flat, reducer=reducer)


class AllreduceSum(ops.Op):
    """The sum over the ranks of an array (synchronised BatchNorm's statistics).

    Differentiable: every rank's loss depends on the sum, so the gradient reaching each rank's
    input is the sum of the ranks' gradients of it, the same Allreduce on the way back."""

    @staticmethod
    def forward(xp, x, collectives, out=None):
        host = np.ascontiguousarray(to_host(x))
        total = np.empty_like(host)
        collectives.allreduce_sum(
            host.ravel(), total.ravel(), "the synchronised BatchNorm statistics"
        )
        return _into(xp, total if xp is np else xp.asarray(total), out)

    infer = staticmethod(lambda x, collectives: ops.Spec(tuple(x.shape), x.dtype))
    vjp = staticmethod(lambda g, out, x, collectives: (lambda: allreduce_sum(g, collectives),))


def allreduce_sum(x: ops.Operand, collectives: Collectives) -> ops.Operand:
    return ops.apply(AllreduceSum, x, collectives=collectives)


class RankMean:
    """What a synchronised BatchNorm averages its batch statistics with: the mean over the
    ranks (every rank holds an equal shard, so it is the whole batch's)."""

    def __init__(self, collectives: Collectives) -> None:
        self.collectives, self.size = collectives, collectives.size

    def __repr__(self) -> str:
        return f"RankMean(ranks={self.size})"

    def mean(self, x: ops.Operand) -> ops.Operand:
        return allreduce_sum(x, self.collectives) * (1.0 / self.size)


class GradientReducer:
    """Averages the loss and gradients of a step over the ranks."""

    def __init__(self, collectives: Collectives, bucket_bytes: int = 25 * 2**20) -> None:
        self.collectives, self.size = collectives, collectives.size
        self.bucket_bytes = max(int(bucket_bytes), 1)
        self.weight = 1.0  # this rank's shard / (batch / N): 1 unless the shards differ
        self.local_stop: Any = None  # this rank's stop flag (its `signal_name`), once watched
        self.agreed_signal: str | None = None  # one that some rank received, known to all
        self.seconds: list[float] = []  # each step's time in the Allreduce calls (benchmarks)

    def __repr__(self) -> str:  # shown by `trainctl graph`
        return f"GradientReducer(ranks={self.size})"

    def reduce(
        self, loss: ops.Operand, grads: Sequence[ops.Operand]
    ) -> tuple[ops.Operand, list[ops.Operand]]:
        """The loss and gradients averaged over the ranks, the same on every rank."""
        dtype = grads[0].dtype if grads else loss.dtype
        parts = [ops.reshape(ops.cast(loss, dtype), (1,))]
        parts += [ops.reshape(g, (g.size,)) for g in grads]
        reduced = allreduce_mean(ops.concatenate(parts), self)
        out, offset = [], 1
        for g in grads:
            out.append(ops.reshape(reduced[offset : offset + g.size], g.shape))
            offset += g.size
        return ops.reshape(ops.cast(reduced[0:1], loss.dtype), ()), out

    def allreduce_mean(self, xp: Any, flat: Any) -> Any:
        """What the op computes: the bucketed Allreduce of `flat` (and the signal slots)."""
        size = flat.size
        send = np.empty(size + len(SIGNALS), dtype=flat.dtype)
        if self.weight == 1.0:
            send[:size] = to_host(flat)
        else:
            np.multiply(to_host(flat), self.weight, out=send[:size])
        local = None if self.local_stop is None else self.local_stop.signal_name
        send[size:] = [float(local == name) for name in SIGNALS]
        received = np.empty_like(send)
        bucket = max(self.bucket_bytes // send.itemsize, 1)
        started = time.perf_counter()
        self.collectives.allreduce_sum(send, received, "the gradient Allreduce", bucket)
        self.seconds.append(time.perf_counter() - started)
        signals = [name for name, count in zip(SIGNALS, received[size:], strict=True) if count]
        if signals:
            self.agreed_signal = signals[-1]  # SIGTERM over SIGINT when both came
        out = received[:size]
        out /= self.size
        return out if xp is np else xp.asarray(out)
