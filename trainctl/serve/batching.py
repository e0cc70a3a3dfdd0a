"""Server-side batching, as TF Serving's batching does it: requests that arrive together run
as one forward.

One worker thread owns the model. It takes the first waiting request, then keeps taking
requests until the batch holds `max_batch_size` samples or `max_wait_s` has passed since the
first, and runs them as one forward. The batch is padded with zero samples up to the next
bucket size (1, 2, 4, ... up to the maximum), so that graph mode compiles one program per
bucket instead of one per batch size a client happens to send. A request larger than the
maximum runs alone, in chunks of the maximum. Without batching each request runs alone (its
size still padded to a bucket).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainctl.predict.model import Predictor

_STOP = None  # put on the queue to end the worker


def bucket_sizes(max_batch_size: int) -> list[int]:
    """Powers of two below `max_batch_size`, then `max_batch_size` itself."""
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch_size]


@dataclass
class _Request:
    inputs: np.ndarray  # prepared: checked and transformed
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


@dataclass
class BatchStats:
    """What the worker has run, for the metadata endpoint (and the tests)."""

    requests: int = 0
    batches: int = 0
    samples: int = 0
    largest_batch_requests: int = 0  # the most requests one forward served
    padded_sizes: Counter = field(default_factory=Counter)  # forwards by bucket size

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "batches": self.batches,
            "samples": self.samples,
            "largest_batch_requests": self.largest_batch_requests,
            "batch_sizes": {str(k): v for k, v in sorted(self.padded_sizes.items())},
        }


class Batcher:
    """Runs prepared requests through `predictor.forward` on one worker thread."""

    def __init__(
        self,
        predictor: Predictor,
        max_batch_size: int = 32,
        max_wait_s: float = 0.002,
        batching: bool = True,
    ) -> None:
        self.predictor = predictor
        self.max_batch_size, self.max_wait_s, self.batching = max_batch_size, max_wait_s, batching
        self.buckets = bucket_sizes(max_batch_size)
        self.stats = BatchStats()
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._carried: _Request | None = None  # taken, but did not fit the last batch
        self._thread = threading.Thread(target=self._work, name="trainctl-batcher", daemon=True)
        self._thread.start()

    async def run(self, prepared: np.ndarray) -> np.ndarray:
        """The outputs for one request's prepared inputs, once a batch has run them."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Request(prepared, future, loop))
        return await future

    def close(self) -> None:
        """Finish the requests already queued, then stop the worker."""
        self._queue.put(_STOP)
        self._thread.join()

    def _next(self, timeout: float | None) -> _Request | None:
        if self._carried is not None:
            request, self._carried = self._carried, None
            return request
        return self._queue.get(timeout=timeout)

    def _work(self) -> None:
        while True:
            first = self._next(None)
            if first is _STOP:
                return
            batch = [first]
            size = len(first.inputs)
            deadline = time.monotonic() + self.max_wait_s
            while self.batching and size < self.max_batch_size:
                try:
                    request = self._next(max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if request is _STOP:
                    self._queue.put(_STOP)  # taken again once this batch has run
                    break
                if size + len(request.inputs) > self.max_batch_size:
                    self._carried = request  # the first of the next batch
                    break
                batch.append(request)
                size += len(request.inputs)
            self._serve(batch)

    def _serve(self, batch: list[_Request]) -> None:
        try:
            outputs = self._forward(np.concatenate([r.inputs for r in batch]))
        except Exception as error:  # handed to every request of the batch
            for request in batch:
                request.loop.call_soon_threadsafe(_settle, request.future, None, error)
            return
        stats = self.stats
        stats.requests += len(batch)
        stats.batches += 1
        stats.samples += len(outputs)
        stats.largest_batch_requests = max(stats.largest_batch_requests, len(batch))
        start = 0
        for request in batch:
            part = outputs[start : start + len(request.inputs)]
            start += len(request.inputs)
            request.loop.call_soon_threadsafe(_settle, request.future, part, None)

    def _forward(self, inputs: np.ndarray) -> np.ndarray:
        """The outputs of `inputs`, in chunks of the maximum, each padded to its bucket."""
        outputs = []
        for start in range(0, len(inputs), self.max_batch_size):
            chunk = inputs[start : start + self.max_batch_size]
            bucket = next(size for size in self.buckets if size >= len(chunk))
            padded = np.zeros((bucket, *chunk.shape[1:]), chunk.dtype)
            padded[: len(chunk)] = chunk
            self.stats.padded_sizes[bucket] += 1
            outputs.append(self.predictor.forward(padded)[: len(chunk)])
        return np.concatenate(outputs)


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
