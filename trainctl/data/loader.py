"""Batches of an ArrayDataset: seeded shuffle, transforms, background prefetch.

A batch is a pure function of (seed, epoch, batch index): epoch e shuffles with the
generator of (seed, e), and the random transforms of batch b draw from (seed, e, b). So the
batches are the same with or without prefetch, and a resumed run that starts epoch e at
batch b sees exactly what the interrupted one would have.

Prefetch runs the batching in one daemon thread feeding a bounded queue. Leaving the
iteration early (break, close, an exception in the consumer) stops and joins the thread; an
exception raised while making a batch is re-raised in the consumer.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from trainctl.data.dataset import ArrayDataset
from trainctl.data.options import resolve_options
from trainctl.data.seeding import check_seed, rng
from trainctl.data.transforms import TRANSFORMS, Batch, TransformEntry, TransformError
from trainctl.errors import DataError

_PUT_POLL_SECONDS = 0.05  # how often a producer blocked on a full queue checks for a stop


class _Done:
    """Put on the queue after the last batch."""


class _Failure:
    """Carries an exception from the producer thread to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _int_at_least(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise DataError(f"{name} must be an integer >= {low}, found {value!r}")
    return int(value)


def resolve_transforms(
    transforms: Sequence[tuple[str, Mapping[str, Any]]],
) -> list[tuple[TransformEntry, dict[str, Any]]]:
    """Each (name, options) pair as its registry entry and checked options."""
    resolved = []
    for name, options in transforms:
        if name not in TRANSFORMS:
            raise DataError(
                f"unknown transform {name!r}; expected one of {', '.join(sorted(TRANSFORMS))}"
            )
        entry = TRANSFORMS[name]
        resolved.append((entry, resolve_options("transform", entry, options)))
    return resolved


class Loader:
    """Mini-batches of `dataset`, epoch by epoch."""

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        transforms: Sequence[tuple[str, Mapping[str, Any]]] = (),
        augment: bool = False,
        prefetch: int = 2,
    ) -> None:
        self.dataset = dataset
        self.batch_size = _int_at_least("batch_size", batch_size, 1)
        self.shuffle, self.drop_last, self.augment = shuffle, drop_last, augment
        self.seed = check_seed(seed)
        self.prefetch = _int_at_least("prefetch", prefetch, 0)
        self.transforms = resolve_transforms(transforms)
        self.wait_seconds = 0.0
        if len(dataset) == 0:
            raise DataError("cannot batch an empty data set")
        if self.batches_per_epoch == 0:
            raise DataError(
                f"batch_size {batch_size} with drop_last leaves no batch from "
                f"{len(dataset)} sample(s)"
            )
        # Fit every transform, random ones too, to one sample now, so a transform that does
        # not fit the data fails here rather than in the middle of an epoch.
        self._transform(dataset.inputs[:1], dataset.targets[:1], rng(self.seed, "augment"), True)

    @property
    def batches_per_epoch(self) -> int:
        full, rest = divmod(len(self.dataset), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def _transform(
        self, x: np.ndarray, y: np.ndarray, generator: np.random.Generator, augment: bool
    ) -> Batch:
        for index, (entry, args) in enumerate(self.transforms):
            if augment or not entry.random:
                try:
                    x, y = entry.apply(x, y, args, generator, self.dataset.num_classes)
                except DataError as exc:
                    raise TransformError(index, str(exc)) from None
        return x, y

    def _order(self, epoch: int) -> np.ndarray:
        if self.shuffle:
            return rng(self.seed, "shuffle", epoch).permutation(len(self.dataset))
        return np.arange(len(self.dataset))

    def _batch(self, order: np.ndarray, epoch: int, index: int) -> Batch:
        picked = order[index * self.batch_size : (index + 1) * self.batch_size]
        x, y = self.dataset.inputs[picked], self.dataset.targets[picked]  # copies
        generator = rng(self.seed, "augment", epoch, index)
        return self._transform(x, y, generator, self.augment)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """The batches of `epoch` from `start_batch` on, as fresh (inputs, targets) arrays."""
        epoch = _int_at_least("epoch", epoch, 0)
        start_batch = _int_at_least("start_batch", start_batch, 0)
        if start_batch > self.batches_per_epoch:
            raise DataError(
                f"start_batch {start_batch} is past the end of an epoch of "
                f"{self.batches_per_epoch} batches"
            )
        order = self._order(epoch)
        indices = range(start_batch, self.batches_per_epoch)
        if self.prefetch == 0:
            return self._inline(order, epoch, indices)
        return self._prefetched(order, epoch, indices)

    def _inline(self, order: np.ndarray, epoch: int, indices: range) -> Iterator[Batch]:
        for index in indices:
            started = time.perf_counter()
            batch = self._batch(order, epoch, index)
            self.wait_seconds += time.perf_counter() - started
            yield batch

    def _prefetched(self, order: np.ndarray, epoch: int, indices: range) -> Iterator[Batch]:
        batches: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    batches.put(item, timeout=_PUT_POLL_SECONDS)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for index in indices:
                    if not put(self._batch(order, epoch, index)):
                        return
            except BaseException as error:  # handed to the consumer, which re-raises it
                put(_Failure(error))
                return
            put(_Done())

        thread = threading.Thread(target=produce, name=f"trainctl-loader-epoch-{epoch}")
        thread.daemon = True
        thread.start()
        try:
            while True:
                started = time.perf_counter()
                item = batches.get()
                self.wait_seconds += time.perf_counter() - started
                if isinstance(item, _Done):
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            stop.set()
            thread.join()
