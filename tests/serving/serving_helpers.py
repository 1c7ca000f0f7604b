"""Helpers shared by the serving tests (imported by name: tests/serving is on sys.path under pytest)."""
from __future__ import annotations

import io
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from serving import ServingConfig, create_app
from serving.backends import Backend


def encode(pixels: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@contextmanager
def running(config: ServingConfig | None = None, backends: Sequence[Backend] | None = None,
            timeout_s: float = 120.0) -> Iterator[TestClient]:
    """An in-process server whose models are loaded and warm."""
    app = create_app(config or ServingConfig(), backends)
    with TestClient(app, raise_server_exceptions=False) as client:
        deadline = time.monotonic() + timeout_s
        while (ready := client.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, f"server not ready: {ready.json()}"
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
