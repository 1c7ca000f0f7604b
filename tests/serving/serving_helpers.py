"""Helpers shared by the serving tests (imported by name: tests/serving is on sys.path under pytest)."""
from __future__ import annotations

import io
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from serving import ServingConfig, create_app
from serving.backends import Backend

if TYPE_CHECKING:
    from export.parity import Tolerance


def encode(pixels: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@contextmanager
def running(config: ServingConfig | None = None, backends: Sequence[Backend] | None = None,
            timeout_s: float = 120.0, ready: bool = True) -> Iterator[TestClient]:
    """An in-process server whose models are loaded and warm (``ready``: and whose /readyz answers 200)."""
    app = create_app(config or ServingConfig(), backends)
    state = app.state.serving
    with TestClient(app, raise_server_exceptions=False) as client:
        deadline = time.monotonic() + timeout_s
        while not (client.get("/readyz").status_code == 200 if ready else state.ready or state.load_error):
            assert state.load_error is None and time.monotonic() < deadline, client.get("/readyz").json()
            time.sleep(0.05)
        yield client




@contextmanager
def uvicorn_server(app, timeout_s: float = 120.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port in a thread; yields the base URL once /readyz is 200."""
    import socket
    import threading

    import httpx
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not become ready"
            time.sleep(0.1)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def assert_same_detections(expected: list[dict], actual: list[dict], score_threshold: float,
                           tol: Tolerance | None = None) -> None:
    """The API's detections from two backends agree within ``tol`` (default: the fp32 export tolerance of
    export.parity: matched recall, box corners within 1 px, scores within 1e-3)."""
    from export.parity import Tolerance, compare_detections

    def arrays(dets: list[dict]) -> dict[str, np.ndarray]:
        return {"boxes": np.array([d["box"] for d in dets], np.float32).reshape(-1, 4),
                "scores": np.array([d["score"] for d in dets], np.float32),
                "labels": np.array([d["label"] for d in dets], np.int64)}

    tol = tol or Tolerance()
    figures = compare_detections(arrays(expected), arrays(actual), score_threshold=score_threshold,
                                 max_detections=10**6, tol=tol)
    assert figures["recall"] >= tol.recall, figures
    assert figures["max_box_diff_px"] <= tol.box_px and figures["max_score_diff"] <= tol.score, figures
    assert abs(len(expected) - len(actual)) <= max(1, round(0.03 * len(expected))), figures
