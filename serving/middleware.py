"""The ASGI middleware around every request: its id, its access log line, its metrics, and the answer to an
exception nothing else handled."""
from __future__ import annotations

import logging
import time
import uuid

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import logs
from .answers import error_response
from .errors import InternalError
from .state import ServerState

log = logging.getLogger("serving")
UNMETERED = ("/metrics", "/healthz", "/readyz")  # probes and scrapes: not requests of the API


class RequestContext:
    """Request id (from X-Request-ID or new, echoed in the answer's X-Request-ID), access log, request metrics
    (by route path; ``other`` for paths no route has), and a JSON 500 carrying the request id for an unhandled
    exception, its traceback logged once."""

    def __init__(self, app: ASGIApp, state: ServerState, paths: set[str]) -> None:
        self.app, self.state, self.paths = app, state, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = given if 0 < len(given) <= 128 and given.isprintable() else uuid.uuid4().hex
        token = logs.request_id.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        status, answered = 500, False

        async def send_with_id(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if answered:  # too late for an answer: the server logs it and drops the connection
                raise
            log.exception("unhandled error")
            error = InternalError("internal error; quote the request id when reporting it")
            await error_response(error.status, error.code, error.message, Request(scope))(scope, receive,
                                                                                          send_with_id)
        finally:
            seconds = time.perf_counter() - started
            path = scope["path"] if scope["path"] in self.paths else "other"
            model = scope["state"].get("model", "")
            if path not in UNMETERED and not path.startswith("/static"):
                self.state.metrics.observe_request(path, model, status, seconds)
            log.info("request", extra={"method": scope["method"], "path": scope["path"], "status": status,
                                       "model": model, "ms": round(seconds * 1000, 2)})
            logs.request_id.reset(token)
