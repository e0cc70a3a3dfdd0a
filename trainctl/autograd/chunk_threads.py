"""CPU kernels shared out over the run's threads: a convolution's chunks (each GEMM on one BLAS
thread), and the large elementwise loops cut in parts.

A chunked convolution (`ops/conv.py`) alternates a small GEMM with a memory-bound copy of the
next chunk's patches. Letting BLAS split each small GEMM over its threads left the second
core idle during the copies, and OpenBLAS's workers spin between GEMMs, which on the 2-core
machine made the copies up to 7x slower: the cifar10_cnn graph step took 870 ms on 2 threads
against 500 ms on 1. Here each of N threads (N: the BLAS threads the run allows) takes every
N-th chunk, with BLAS held to one thread meanwhile: 128 chunks of a 32-channel CIFAR
convolution ran in 18 ms against 30 ms on 2 BLAS threads and 35 ms on one.

Every chunk's GEMM runs on one BLAS thread either way, so the bits do not depend on the
thread count, and eager and graph mode (which call the same op) agree. Thread k > 0 works in
its own copy of the op's scratch, made once per shape and kept, so a planned graph step
allocates nothing in its steady state. Those copies assume one kernel call at a time in a
process, as a training step and serve's batcher (one forward at a time) make them.

Large elementwise kernels (BatchNorm's loops, ReLU, the fused chains, max-pooling) compute
each element (or channel) on its own, in Numba loops or ufuncs that release the GIL; `share`
cuts them in one contiguous part per thread, which gives the bits of a single call.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

# Sharing out pays only with several chunks per thread: each call costs ~50 us (the hand-off
# to a worker, BLAS's limit set and reset), and a chunk on one BLAS thread loses the GEMM's
# own split. The small CNN's 8 -> 16 channel conv at batch 64 (2 chunks) made its graph step
# 4.2 -> 5.1 ms when its chunks were shared out; cifar10_cnn's (16-128 chunks) gain 3x.
MIN_CHUNKS_PER_THREAD = 4
# An elementwise kernel is cut in parts for threads from this size: handing a part to a worker
# and waiting for it costs ~30 us; a 1M-element BatchNorm pass takes ~0.5-1 ms.
MIN_SHARED_ELEMENTS = 1 << 20
# A matrix-vector product smaller than this is left to BLAS as it is: limiting BLAS costs
# ~18 us a call, more than a small product takes.
MIN_ONE_THREAD_ELEMENTS = 1 << 20

_state: dict[str, Any] = {}  # the BLAS controller, and the pool with the pid that made it
_scratch_copies: dict[tuple, list] = {}


def _blas():
    """threadpoolctl's view of the BLAS libraries (made once: it scans the loaded ones)."""
    if "blas" not in _state:
        from threadpoolctl import ThreadpoolController

        _state["blas"] = ThreadpoolController().select(user_api="blas")
    return _state["blas"]


def _pool(workers: int) -> Any:
    """The worker threads (a ThreadPoolExecutor, imported on first use: 4 ms), made again in
    a forked child (whose copy has no threads)."""
    pool, pid, size = _state.get("pool", (None, None, 0))
    if pool is None or pid != os.getpid() or size < workers:
        from concurrent.futures import ThreadPoolExecutor

        if pool is not None and pid == os.getpid():
            pool.shutdown(wait=False)  # a larger one replaces it

        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="trainctl-chunks")
        _state["pool"] = (pool, os.getpid(), workers)
    return pool


@contextlib.contextmanager
def one_blas_thread(xp: Any, elements: int) -> Iterator[None]:
    """BLAS held to one thread (NumPy, from MIN_ONE_THREAD_ELEMENTS): for a memory-bound
    product that gains nothing from a second thread and would leave OpenBLAS's workers
    spinning against the work after it."""
    if xp is not np or elements < MIN_ONE_THREAD_ELEMENTS:
        yield
        return
    with _blas().limit(limits=1):
        yield


def _allowed_threads() -> int:
    """The BLAS threads allowed now: the run's `threads`, as threadpoolctl set them."""
    return max(1, min((lib.num_threads for lib in _blas().lib_controllers), default=1))


def threads_for(xp: Any, chunks: int) -> int:
    """How many threads the chunks of one kernel call get: on NumPy, the BLAS threads allowed
    now, with MIN_CHUNKS_PER_THREAD chunks each; elsewhere (CuPy) one."""
    if xp is not np or chunks < 2 * MIN_CHUNKS_PER_THREAD:
        return 1
    return max(1, min(chunks // MIN_CHUNKS_PER_THREAD, _allowed_threads()))


def share(xp: Any, n: int, elements: int, work: Callable[[int, int], None]) -> None:
    """`work(start, stop)` over range(n) cut in one contiguous part per thread allowed, from
    MIN_SHARED_ELEMENTS elements on NumPy (else one call over it all). For kernels that
    compute each element (or channel) on its own, in a loop that releases the GIL: the parts
    then give the bits of one call."""
    threads = _allowed_threads() if xp is np and elements >= MIN_SHARED_ELEMENTS else 1
    threads = min(threads, n)
    if threads <= 1:
        work(0, n)
        return
    bounds = [n * thread // threads for thread in range(threads + 1)]
    _on_threads(threads, lambda thread: work(bounds[thread], bounds[thread + 1]))


def share_rows(xp: Any, work: Callable[..., None], *args: Any, whole: Sequence[int] = ()) -> None:
    """`work(*args)` as `share` cuts it: every array argument (the first gives the rows) cut to
    the part's rows of its first axis, but numbers and the arguments at the positions in
    `whole` (per-channel vectors) passed as they are; one call on the whole when not shared."""
    rows = args[0]
    if xp is not np or rows.size < MIN_SHARED_ELEMENTS:
        work(*args)
        return
    cut = [getattr(a, "ndim", 0) > 0 and i not in whole for i, a in enumerate(args)]

    def part(start: int, stop: int) -> None:
        work(*(a[start:stop] if by_rows else a for a, by_rows in zip(args, cut, strict=True)))

    share(xp, len(rows), rows.size, part)


def _on_threads(threads: int, task: Callable[[int], None]) -> None:
    """task(0) on the calling thread, task(1..threads-1) on the pool's, all finished (and a
    worker's error raised) on return."""
    futures = [_pool(threads - 1).submit(task, thread) for thread in range(1, threads)]
    try:
        task(0)
    finally:
        for future in futures:
            future.result()


def _scratch_of(owner: str, thread: int, scratch: Sequence) -> list:
    """Thread `thread`'s copy of the scratch of kernel `owner`, zeroed when made, and the same
    arrays on every later call. Kept per kernel: a padded image's border, zero for the
    forward, is written by the input gradient's col2im."""
    if thread == 0:
        return list(scratch)
    key = (owner, thread, *((a.shape, a.dtype.str) for a in scratch))
    if key not in _scratch_copies:
        _scratch_copies[key] = [np.zeros(a.shape, a.dtype) for a in scratch]
    return _scratch_copies[key]


def kept_array(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An array made once per shape and dtype and handed out again on every later call (the
    per-chunk products of a weight gradient summed on several threads)."""
    key = ("kept", shape, np.dtype(dtype).str)
    if key not in _scratch_copies:
        _scratch_copies[key] = [np.empty(shape, dtype)]
    return _scratch_copies[key][0]


def run_chunks(
    owner: str,
    chunks: list[tuple[int, int]],
    threads: int,
    scratch: Sequence,
    work: Callable[..., None],
) -> None:
    """`work(index, start, stop, scratch)` for every chunk: in order when `threads` is 1,
    otherwise chunk i on thread i % threads, each GEMM on one BLAS thread."""
    if threads == 1:
        for index, (start, stop) in enumerate(chunks):
            work(index, start, stop, scratch)
        return

    def take_share(thread: int) -> None:
        own = _scratch_of(owner, thread, scratch)
        for index in range(thread, len(chunks), threads):
            work(index, *chunks[index], own)

    with _blas().limit(limits=1):
        _on_threads(threads, take_share)
