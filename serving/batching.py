"""Dynamic batching: requests queue per model and run together, up to ``max_batch_size`` images or ``max_wait_s``
after the first one arrived, on a worker thread so inference never blocks the event loop."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .backends.base import Backend, Result
from .errors import Overloaded, RequestTimeout, ServingError

log = logging.getLogger("serving.batching")


@dataclass(frozen=True)
class Outcome:
    result: Result
    queue_s: float  # waiting for a batch slot
    inference_s: float  # the whole batch on the backend


@dataclass
class _Item:
    image: np.ndarray
    future: asyncio.Future
    enqueued: float


class BatchFailed(ServingError):
    """The backend raised while running a batch; the requests in it get this answer and the worker lives on."""

    status, code = 503, "inference_failed"


class DynamicBatcher:
    """Queue in front of one backend. ``submit`` waits for the image's result or raises a ServingError."""

    def __init__(self, backend: Backend, *, max_batch_size: int, max_wait_s: float, queue_size: int,
                 retry_after_s: int = 1, on_batch: Callable[[int, float], None] | None = None,
                 executor: ThreadPoolExecutor | None = None) -> None:
        """``executor``: the thread that runs ``backend.infer`` (shared with other batchers; the caller shuts it
        down). Without one the batcher starts and owns a single thread of its own."""
        if max_batch_size < 1 or queue_size < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size and queue_size must be >= 1 and max_wait_s >= 0")
        self.backend = backend
        self.max_batch_size = min(max_batch_size, backend.max_batch_size)
        self.max_wait_s = max_wait_s
        self.retry_after_s = retry_after_s
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=queue_size)
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{backend.info.name}")
        self._on_batch = on_batch
        self._worker: asyncio.Task | None = None
        self._closing = False
        self._busy = False

    @property
    def depth(self) -> int:
        """Requests waiting in the queue (not counting the batch running now)."""
        return self._queue.qsize()

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.backend.info.name}")

    def check_capacity(self) -> None:
        """Raise :class:`Overloaded` now if a request would be refused (full queue, shutting down), so that the
        server can answer before spending time on reading and decoding the image."""
        headers = {"Retry-After": str(self.retry_after_s)}
        if self._closing:
            raise Overloaded("the server is shutting down", headers=headers)
        if self._queue.full():
            raise Overloaded(f"the queue for model {self.backend.info.name!r} is full ({self._queue.maxsize} "
                             "waiting); retry later", headers=headers)

    async def submit(self, image: np.ndarray, timeout_s: float) -> Outcome:
        self.check_capacity()
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(image, future, time.perf_counter()))
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise RequestTimeout(f"inference did not finish within {timeout_s:g} s") from None

    async def _next_batch(self) -> list[_Item]:
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            try:
                item = self._queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(
                    self._queue.get(), remaining)
            except (TimeoutError, asyncio.QueueEmpty):
                break
            batch.append(item)
        return [item for item in batch if not item.future.done()]  # timed-out requests are dropped unrun

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            started = time.perf_counter()
            self._busy = True
            try:
                results = await loop.run_in_executor(self._executor, self.backend.infer, [i.image for i in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"backend returned {len(results)} results for {len(batch)} images")
            except asyncio.CancelledError:
                _fail(batch, Overloaded("the server is shutting down"))
                raise
            except Exception as exc:  # every failure becomes an answer; the worker keeps running
                if not isinstance(exc, ServingError):
                    log.exception("inference failed for a batch of %d", len(batch))
                _fail(batch, exc if isinstance(exc, ServingError)
                      else BatchFailed(f"inference failed: {type(exc).__name__}: {exc}"))
                continue
            finally:
                self._busy = False
            elapsed = time.perf_counter() - started
            if self._on_batch is not None:
                self._on_batch(len(batch), elapsed)
            for item, result in zip(batch, results):
                if not item.future.done():
                    item.future.set_result(Outcome(result, started - item.enqueued, elapsed))

    async def close(self, drain_timeout_s: float = 10.0) -> None:
        """Refuse new requests, let the queued ones finish (up to ``drain_timeout_s``), then stop the worker."""
        self._closing = True
        deadline = time.perf_counter() + drain_timeout_s
        while (self._queue.qsize() or self._busy) and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        left = []
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
        _fail(left, Overloaded("the server is shutting down"))
        if self._owns_executor:
            self._executor.shutdown(wait=True, cancel_futures=True)


def _fail(items: list[_Item], error: Exception) -> None:
    """Answer ``error`` to the items still waiting."""
    for item in items:
        if not item.future.done():
            item.future.set_exception(error)
