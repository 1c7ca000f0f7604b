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


