"""Prometheus metrics, in a registry of the app's own (so several apps in one process do not collide)."""
from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "serving_requests", "HTTP requests answered, by endpoint, model and status code.",
            ["endpoint", "model", "status"], registry=self.registry)
        self.latency = Histogram(
            "serving_request_latency_seconds", "Time from request received to response ready.",
            ["endpoint", "model", "status"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge(
            "serving_queue_depth", "Requests waiting for a batch slot.", ["model"], registry=self.registry)
        self.batch_size = Histogram(
            "serving_batch_size", "Images per inference batch.", ["model"], buckets=_BATCH_BUCKETS,
            registry=self.registry)
        self.inference = Histogram(
            "serving_inference_seconds", "Backend time per batch.", ["model", "backend"],
            buckets=_LATENCY_BUCKETS, registry=self.registry)

    def observe_request(self, endpoint: str, model: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, model, str(status)).inc()
        self.latency.labels(endpoint, model, str(status)).observe(seconds)

    def observe_batch(self, model: str, backend: str, size: int, seconds: float) -> None:
        self.batch_size.labels(model).observe(size)
        self.inference.labels(model, backend).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
