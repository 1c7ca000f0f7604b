"""The app's state, one typed object on ``app.state.serving``: the settings, the metrics, and the served models
(their backends and batchers, loaded in the background), with the per-request steps that need them."""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from zoo.vocabulary import SEGMENTATION

from .backends import Backend, create_backend
from .batching import DynamicBatcher, Outcome
from .config import ServingConfig
from .errors import ModelNotFound, NotReady, Overloaded, RequestTimeout, ServingError, WrongTask
from .limits import DecodedImage, Upload, decode_image
from .metrics import Metrics

log = logging.getLogger("serving")
T = TypeVar("T")


@dataclass(frozen=True)
class Served:
    """A served model as a request sees it: its backend and the batcher in front of it."""

    backend: Backend
    batcher: DynamicBatcher

    @property
    def name(self) -> str:
        return self.backend.info.name


@dataclass(frozen=True)
class Inferred:
    """One request's decoded image and its model's result, with the time decoding took."""

    image: DecodedImage
    outcome: Outcome
    decode_ms: float


class ServerState:
    """The served models: their backends and batchers, filled in by the background loader."""

    def __init__(self, config: ServingConfig, backends: Sequence[Backend] | None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.backends: dict[str, Backend] = {}
        self.batchers: dict[str, DynamicBatcher] = {}
        self._given = list(backends) if backends is not None else None
        self.default = self._given[0].info.name if self._given else config.models[0]
        self.ready = False
        self.load_error: str | None = None
        self.on_load_error: Callable[[], None] | None = None  # the CLI stops the server: nothing to serve
        # One thread loads, warms up and runs every in-process model. libgomp (torch's OpenMP) cuts its workers'
        # spin-waiting to almost nothing once more threads have run parallel regions than there are CPUs, so
        # inference split over threads ran slower on 2 cores (benchmarks/bench_inference_threads.py).
        self.compute: ThreadPoolExecutor | None = None  # made by load, shut down by close
        self.decoders: ThreadPoolExecutor | None = None  # decodes uploads for the other backends, as many at once
        self.decoding: Counter[str] = Counter()  # per model: uploads being decoded (or waiting for a decoding thread)

    async def on_compute(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the compute thread."""
        if self.compute is None:
            raise NotReady("models are not loaded", headers={"Retry-After": "5"})
        return await asyncio.get_running_loop().run_in_executor(self.compute, fn, *args)

    async def load(self) -> None:
        """Create (or, after a restart of the app's lifespan, re-create) the backends' batchers and warm them up."""
        self.compute = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compute")
        self.decoders = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="decode")
        self.backends, self.batchers, self.ready, self.load_error = {}, {}, False, None
        try:
            backends = self._given
            if backends is None:
                backends = [await self.on_compute(create_backend, name, self.config) for name in self.config.models]
            for backend in backends:
                started = time.perf_counter()
                await self.on_compute(backend.warmup)
                name = backend.info.name
                batcher = DynamicBatcher(
                    backend, max_batch_size=self.config.max_batch_size, max_wait_s=self.config.max_wait_ms / 1000,
                    queue_size=self.config.queue_size,
                    on_batch=functools.partial(self.metrics.observe_batch, name, backend.info.backend),
                    executor=self.compute if backend.in_process else None)
                batcher.start()
                self.backends[name], self.batchers[name] = backend, batcher
                log.info("model ready", extra={"model": name, "backend": backend.info.backend,
                                               "warmup_s": round(time.perf_counter() - started, 3)})
            self.default = backends[0].info.name
            self.ready = True
        except ServingError as exc:
            self.load_error = exc.message
            log.error("loading models failed: %s", exc.message)
        except Exception as exc:  # reported by /readyz (and ends the CLI's server)
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("loading models failed")
        if self.load_error is not None and self.on_load_error is not None:
            self.on_load_error()

    async def close(self) -> None:
        await asyncio.gather(*(b.close(self.config.shutdown_timeout_s) for b in self.batchers.values()))
        if self._given is None:  # backends handed in are their owner's to close
            for backend in self.backends.values():
                await self.on_compute(backend.close)
        for executor in (self.compute, self.decoders):
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
        self.compute = self.decoders = None

    def not_ready_detail(self) -> str | None:
        """Why the models cannot serve yet (None once they can)."""
        if self.ready:
            return None
        return f"model loading failed: {self.load_error}" if self.load_error else "models are still loading"

    def resolve(self, name: str | None, task: str) -> Served:
        """The served model ``name`` (the default when None) for ``task``: 503 while loading, 404 when not served
        here, 422 when it does the other task."""
        if (detail := self.not_ready_detail()) is not None:
            raise NotReady(detail, headers={"Retry-After": "5"})
        name = name or self.default
        if name not in self.backends:
            raise ModelNotFound(f"model {name!r} is not served here; served: {', '.join(self.backends)}")
        backend = self.backends[name]
        if backend.info.task != task:
            other = "/v1/segment" if backend.info.task == SEGMENTATION else "/v1/detect"
            raise WrongTask(f"model {name!r} is a {backend.info.task} model; use POST {other}")
        return Served(backend, self.batchers[name])

    async def infer(self, served: Served, upload: Upload, started: float) -> Inferred:
        """Decode an upload and run it through its model, within the request timeout (504 past it); ``started``:
        when the request began (``time.perf_counter()``), the start of its decode time."""
        timeout_s = self.config.request_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                image = await self._decode(served, upload)
                decode_ms = (time.perf_counter() - started) * 1000
                self.metrics.queue_depth.labels(served.name).set(served.batcher.depth)
                outcome = await served.batcher.submit(image.pixels, timeout_s)
        except TimeoutError:
            raise RequestTimeout(f"decoding and inference did not finish within {timeout_s:g} s") from None
        return Inferred(image, outcome, decode_ms)

    async def _decode(self, served: Served, upload: Upload) -> DecodedImage:
        """Decode an upload as one of the model's queued requests: refused (503) when decodes and queue together
        reach ``queue_size``, and holding its place until the decode has ended, even after its request timed out
        (a decode not started by then never runs). In-process backends decode on the compute thread: beside
        inference a decode would steal a core from its threads."""
        name, queue_size = served.name, self.config.queue_size
        if self.decoding[name] + served.batcher.depth >= queue_size:
            raise Overloaded(f"model {name!r} has {queue_size} requests decoding or queued; retry later",
                             headers={"Retry-After": str(served.batcher.retry_after_s)})
        executor = self.compute if served.backend.in_process else self.decoders
        if executor is None:
            raise NotReady("models are not loaded", headers={"Retry-After": "5"})
        loop = asyncio.get_running_loop()
        self.decoding[name] += 1
        job = executor.submit(decode_image, upload.data, upload.declared, self.config.max_pixels)
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self.decoding.subtract, [name]))
        return await asyncio.wrap_future(job)
