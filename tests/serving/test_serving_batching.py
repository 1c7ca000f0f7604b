"""Dynamic batching: requests run together, a full queue answers 503 + Retry-After, slow inference 504, a failing
batch 503 while the worker lives on, and shutdown lets queued requests finish."""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from serving_helpers import encode

from serving import ServingConfig
from serving.backends.base import Backend, Detections, ModelInfo
from serving.batching import DynamicBatcher
from serving.errors import Overloaded, RequestTimeout


class TimedBackend(Backend):
    """Takes ``seconds`` per batch and answers each image with one box whose score is the image's mean / 255;
    records batch sizes; fails batches holding an all-black image."""

    def __init__(self, seconds: float, max_batch_size: int = 8) -> None:
        self.info = ModelInfo("timed", "1", "detection", ("thing",), backend="test")
        self.seconds, self.max_batch_size = seconds, max_batch_size
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def warmup(self) -> None:
        pass

    def infer(self, images):
        with self.lock:
            self.batches.append(len(images))
        time.sleep(self.seconds)
        if any(image.max() == 0 for image in images):
            raise RuntimeError("black image")
        return [Detections(np.array([[0, 0, 4, 4]], np.float32), np.array([image.mean() / 255], np.float32),
                           np.array([1])) for image in images]


def grey(value: int) -> np.ndarray:
    return np.full((8, 8, 3), value, np.uint8)


def test_concurrent_requests_share_batches_and_keep_their_own_results():
    backend = TimedBackend(0.05)

    async def scenario():
        batcher = DynamicBatcher(backend, max_batch_size=4, max_wait_s=0.05, queue_size=16)
        batcher.start()
        outcomes = await asyncio.gather(*(batcher.submit(grey(10 * i + 5), 5.0) for i in range(8)))
        await batcher.close()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert [round(float(o.result.scores[0]) * 255) for o in outcomes] == [10 * i + 5 for i in range(8)]
    assert sum(backend.batches) == 8 and max(backend.batches) == 4 and len(backend.batches) <= 3


def test_full_queue_answers_overloaded_and_timeouts_are_dropped():
    backend = TimedBackend(0.3, max_batch_size=1)

    async def scenario():
        batcher = DynamicBatcher(backend, max_batch_size=1, max_wait_s=0, queue_size=2, retry_after_s=2)
        batcher.start()
        tasks = [asyncio.create_task(batcher.submit(grey(50), 5.0)) for _ in range(6)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        late = await asyncio.gather(batcher.submit(grey(60), 0.05), return_exceptions=True)
        await batcher.close()
        return results, late[0]

    results, late = asyncio.run(scenario())
    refused = [r for r in results if isinstance(r, Overloaded)]
    assert len(refused) >= 2 and all(r.headers["Retry-After"] == "2" for r in refused)
    assert sum(not isinstance(r, Exception) for r in results) >= 2
    assert isinstance(late, RequestTimeout)


@pytest.fixture()
def timed_client(serve):
    backend = TimedBackend(0.4)
    config = ServingConfig(max_batch_size=2, max_wait_ms=20, queue_size=2, request_timeout_s=3.0)
    with serve(config, [backend]) as client:
        yield client, backend


def test_http_queue_full_is_503_with_retry_after(timed_client):
    client, backend = timed_client
    data = encode(grey(100), "PNG")
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda _: client.post("/v1/detect?score_threshold=0", content=data), range(12)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 503}, statuses
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.headers["retry-after"] == "1" and refused.json()["error"]["code"] == "overloaded"
    assert max(backend.batches) == 2
    text = client.get("/metrics").text
    assert 'serving_requests_total{endpoint="/v1/detect",model="timed",status="503"}' in text
    assert 'serving_batch_size_bucket{le="2.0",model="timed"}' in text
    assert client.post("/v1/detect", content=data).status_code == 200


def test_http_timeout_and_failed_batch(serve):
    backend = TimedBackend(0.5)
    with serve(ServingConfig(request_timeout_s=0.1), [backend]) as client:
        slow = client.post("/v1/detect", content=encode(grey(100), "PNG"))
        assert slow.status_code == 504 and slow.json()["error"]["code"] == "timeout"
    backend.seconds = 0.0
    with serve(ServingConfig(), [backend]) as client:
        failed = client.post("/v1/detect", content=encode(grey(0), "PNG"))
        assert failed.status_code == 503 and "black image" in failed.json()["error"]["message"]
        assert client.post("/v1/detect?score_threshold=0", content=encode(grey(90), "PNG")).status_code == 200


def test_shutdown_finishes_queued_requests():
    backend = TimedBackend(0.1, max_batch_size=1)

    async def scenario():
        batcher = DynamicBatcher(backend, max_batch_size=1, max_wait_s=0, queue_size=8)
        batcher.start()
        tasks = [asyncio.create_task(batcher.submit(grey(40), 5.0)) for _ in range(4)]
        await asyncio.sleep(0.01)
        await batcher.close(drain_timeout_s=5.0)
        after = await asyncio.gather(batcher.submit(grey(40), 1.0), return_exceptions=True)
        return await asyncio.gather(*tasks, return_exceptions=True), after[0]

    results, after = asyncio.run(scenario())
    assert all(not isinstance(r, Exception) for r in results)
    assert isinstance(after, Overloaded)


def test_torch_streams_give_each_image_its_own_detections(demo_backend, neon_tile, photos):
    """A batch on CPU streams (one single-threaded forward per image, side by side) answers exactly as the images
    one at a time, in order, and leaves the calling thread's intra-op threads as they were."""
    import torch

    from serving.backends.torch_backend import TorchBackend

    images = [neon_tile, photos["coffee"], neon_tile[:200, :300], photos["astronaut"]]
    streamed = TorchBackend(demo_backend.model, demo_backend.info, streams=2)
    try:
        threads = torch.get_num_threads()
        batch = streamed.infer(images)
        assert torch.get_num_threads() == threads
        assert len(batch[0].boxes) > 0  # the tile has tree crowns
        for image, got in zip(images, batch):
            (alone,) = streamed.infer([image])
            assert got.boxes.shape == alone.boxes.shape
            np.testing.assert_allclose(got.boxes, alone.boxes, atol=1e-3)
            np.testing.assert_allclose(got.scores, alone.scores, atol=1e-5)
            np.testing.assert_array_equal(got.labels, alone.labels)
    finally:
        streamed.close()


def test_an_app_serves_again_after_its_lifespan_restarts():
    """Each lifespan makes its own compute thread and batchers, so an app entered twice serves both times."""
    from fastapi.testclient import TestClient

    from serving.app import create_app

    backend = TimedBackend(0.0)
    app = create_app(ServingConfig(), [backend])
    data = encode(grey(100), "PNG")
    for _ in range(2):
        with TestClient(app) as client:
            deadline = time.monotonic() + 30
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert client.post("/v1/detect?score_threshold=0", content=data).status_code == 200
