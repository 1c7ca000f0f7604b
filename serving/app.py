"""The FastAPI application: endpoints, error answers, request ids, metrics and model lifecycle."""
from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import logs
from .backends import Backend, Detections, create_backend
from .batching import DynamicBatcher, Outcome
from .config import ServingConfig
from .errors import (
    BackendUnavailable,
    InternalError,
    ModelNotFound,
    NotReady,
    Overloaded,
    RequestTimeout,
    ServingError,
    WrongTask,
)
from .limits import DecodedImage, decode_image, read_upload
from .metrics import Metrics
from .results import (
    encode_label_map_png,
    parse_classes,
    segment_classes,
    select_detections,
)
from .schemas import (
    DetectResponse,
    ErrorResponse,
    ImageSize,
    ModelDescription,
    ModelRef,
    ModelsResponse,
    SegmentResponse,
    Status,
    Timings,
)
from .visualize import draw_detections

log = logging.getLogger("serving")
STATIC = Path(__file__).parent / "static"
DOCS_ASSETS = "/static/docs"  # Swagger UI and ReDoc, served from the fastapi-offline package: /docs works offline

_BINARY = {"schema": {"type": "string", "format": "binary"}}
IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": "A JPEG, PNG or WebP image: the raw body, or a multipart/form-data file field `file`.",
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                               "properties": {"file": {"type": "string", "format": "binary"}}}},
            "image/jpeg": _BINARY, "image/png": _BINARY, "image/webp": _BINARY, "application/octet-stream": _BINARY,
        },
    }
}
_ERRORS = {status: {"model": ErrorResponse, "description": text} for status, text in {
    404: "Unknown model.",
    408: "The upload was not received within the body deadline; the connection is closed.",
    413: "Upload too large, or too many pixels (decompression bomb).",
    415: "Not a JPEG, PNG or WebP image.",
    422: "Corrupt or truncated image, or bad parameters.",
    500: "Internal error (a bug); quote the request id when reporting it.",
    503: "Not ready, queue full (see Retry-After) or backend unreachable.",
    504: "Decoding and inference did not finish within the request timeout.",
}.items()} | {400: {"description": "Malformed HTTP request, refused by the HTTP parser before the application "
                                   "(e.g. an overlong URL); plain-text body. So is the 503 of a server past its "
                                   "connection limit."}}


T = TypeVar("T")


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
        # inference split over threads ran 86 vs 59 ms for the demo model on 2 cores (bench_inference_threads.py).
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
                    on_batch=lambda n, s, m=name, b=backend.info.backend: self.metrics.observe_batch(m, b, n, s),
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

    async def decode(self, backend: Backend, batcher: DynamicBatcher, data: bytes, declared: str | None
                     ) -> DecodedImage:
        """Decode an upload as one of the model's queued requests: refused (503) when decodes and queue together
        reach ``queue_size``, and holding its place until the decode has ended, even after its request timed out
        (a decode not started by then never runs). In-process backends decode on the compute thread: beside
        inference a decode would steal a core from its threads."""
        name = backend.info.name
        if self.decoding[name] + batcher.depth >= self.config.queue_size:
            raise Overloaded(f"model {name!r} has {self.config.queue_size} requests decoding or queued; retry later",
                             headers={"Retry-After": str(batcher.retry_after_s)})
        executor = self.compute if backend.in_process else self.decoders
        if executor is None:
            raise NotReady("models are not loaded", headers={"Retry-After": "5"})
        loop = asyncio.get_running_loop()
        self.decoding[name] += 1
        job = executor.submit(decode_image, data, declared, self.config.max_pixels)
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self.decoding.subtract, [name]))
        return await asyncio.wrap_future(job)

    def resolve(self, name: str | None, task: str) -> tuple[Backend, DynamicBatcher]:
        if not self.ready:
            detail = f"model loading failed: {self.load_error}" if self.load_error else "models are still loading"
            raise NotReady(detail, headers={"Retry-After": "5"})
        name = name or self.default
        if name not in self.backends:
            raise ModelNotFound(f"model {name!r} is not served here; served: {', '.join(self.backends)}")
        backend = self.backends[name]
        if backend.info.task != task:
            other = "/v1/segment" if backend.info.task == "segmentation" else "/v1/detect"
            raise WrongTask(f"model {name!r} is a {backend.info.task} model; use POST {other}")
        return backend, self.batchers[name]


class RequestContext:
    """ASGI middleware: request id (from X-Request-ID or new), access log, request metrics, and the answer to an
    exception nothing else handled: a JSON 500 carrying the request id, the traceback logged once."""

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
            await _error(error.status, error.code, error.message, Request(scope))(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            path = scope["path"] if scope["path"] in self.paths else "other"
            model = scope["state"].get("model", "")
            if path not in ("/metrics", "/healthz", "/readyz") and not path.startswith("/static"):
                self.state.metrics.observe_request(path, model, status, seconds)
            log.info("request", extra={"method": scope["method"], "path": scope["path"], "status": status,
                                       "model": model, "ms": round(seconds * 1000, 2)})
            logs.request_id.reset(token)


def _error(status: int, code: str, message: str, request: Request, headers: dict | None = None) -> JSONResponse:
    rid = request.scope.get("state", {}).get("request_id", "-")
    body = ErrorResponse(error={"code": code, "message": message}, request_id=rid)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def create_app(config: ServingConfig | None = None, backends: Sequence[Backend] | None = None) -> FastAPI:
    """The service. ``backends`` (already built) replace loading ``config.models`` with ``config.backend``."""
    config = config or ServingConfig()
    state = ServerState(config, backends)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loader = asyncio.create_task(state.load())
        try:
            yield
        finally:
            if not loader.done():
                loader.cancel()
            await asyncio.gather(loader, return_exceptions=True)
            await state.close()
            log.info("stopped")

    app = FastAPI(
        title="objects365-zoo serving",
        version="1",
        description="Object detection and semantic segmentation with Objects365-pretrained models. Send an image "
                    "(JPEG, PNG, WebP) as the raw body or as a multipart file field `file`.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.serving = state

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, exc: ServingError) -> JSONResponse:
        if isinstance(exc, BackendUnavailable):
            log.warning("backend unavailable: %s", exc.message)
        return _error(exc.status, exc.code, exc.message, request, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in exc.errors()]
        return _error(422, "bad_parameter", "; ".join(parts), request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), request, getattr(exc, "headers", None))

    async def run(request: Request, model: str | None, task: str, classes: str | None
                  ) -> tuple[Backend, DecodedImage, Outcome, set[int] | None, float]:
        started = time.perf_counter()
        backend, batcher = state.resolve(model, task)
        request.state.model = backend.info.name
        selected = parse_classes(classes, backend.info.categories, backend.info.label_offset,
                                 background=task == "segmentation")
        batcher.check_capacity()
        data, declared = await read_upload(request, config.max_upload_bytes, config.body_timeout_s)
        try:
            async with asyncio.timeout(config.request_timeout_s):
                image = await state.decode(backend, batcher, data, declared)
                decoded = time.perf_counter()
                state.metrics.queue_depth.labels(backend.info.name).set(batcher.depth)
                outcome = await batcher.submit(image.pixels, config.request_timeout_s)
        except TimeoutError:
            raise RequestTimeout(f"decoding and inference did not finish within {config.request_timeout_s:g} s"
                                 ) from None
        return backend, image, outcome, selected, (decoded - started) * 1000

    def timings(request_started: float, decode_ms: float, outcome: Outcome) -> Timings:
        return Timings(decode_ms=round(decode_ms, 2), queue_ms=round(outcome.queue_s * 1000, 2),
                       inference_ms=round(outcome.inference_s * 1000, 2),
                       total_ms=round((time.perf_counter() - request_started) * 1000, 2))

    def ref(backend: Backend) -> ModelRef:
        return ModelRef(name=backend.info.name, version=backend.info.version, backend=backend.info.backend)

    ModelParam = Query(None, description="A served model's name (GET /v1/models); the server's default if absent.",
                       max_length=200)
    ThresholdParam = Query(None, ge=0.0, le=1.0, allow_inf_nan=False,
                           description=f"Keep detections scoring at least this (default {config.score_threshold}); "
                                       "the model's own floor (GET /v1/models) still applies.")
    MaxParam = Query(None, ge=1, le=1000, description="Keep at most this many detections, best first "
                                                      "(default: the model's).")
    ClassesParam = Query(None, max_length=10_000,
                         description="Comma-separated class names or labels to keep, e.g. `person,car` or `1,3`.")

    async def detect_common(request: Request, model: str | None, score_threshold: float | None,
                            max_detections: int | None, classes: str | None):
        started = time.perf_counter()
        backend, image, outcome, selected, decode_ms = await run(request, model, "detection", classes)
        result = outcome.result
        if not isinstance(result, Detections):
            raise WrongTask(f"model {backend.info.name!r} returned no detections")
        detections = select_detections(
            result, backend.info.categories, width=image.width, height=image.height,
            score_threshold=config.score_threshold if score_threshold is None else score_threshold,
            max_detections=max_detections or backend.info.max_detections, classes=selected)
        return backend, image, detections, timings(started, decode_ms, outcome)

    @app.post("/v1/detect", response_model=DetectResponse, openapi_extra=IMAGE_BODY, responses=_ERRORS,
              summary="Detect objects", tags=["inference"])
    async def detect(request: Request, model: str | None = ModelParam, score_threshold: float | None = ThresholdParam,
                     max_detections: int | None = MaxParam, classes: str | None = ClassesParam) -> DetectResponse:
        backend, image, detections, times = await detect_common(request, model, score_threshold, max_detections,
                                                                 classes)
        return DetectResponse(request_id=request.state.request_id, model=ref(backend),
                              image=ImageSize(width=image.width, height=image.height), detections=detections,
                              timings=times)

    @app.post("/v1/detect:visualize", openapi_extra=IMAGE_BODY, summary="Detect objects and draw them",
              tags=["inference"], response_class=Response,
              responses={**_ERRORS, 200: {"content": {"image/png": {}, "image/jpeg": {}},
                                          "description": "The image with boxes and names drawn."}})
    async def detect_visualize(
        request: Request, model: str | None = ModelParam, score_threshold: float | None = ThresholdParam,
        max_detections: int | None = MaxParam, classes: str | None = ClassesParam,
        format: Literal["png", "jpeg"] = Query("png", description="Encoding of the drawn image."),
    ) -> Response:
        _, image, detections, _ = await detect_common(request, model, score_threshold, max_detections, classes)
        fmt = format.upper()
        content = await run_in_threadpool(draw_detections, image.pixels, detections, fmt)
        return Response(content, media_type=f"image/{format}", headers={"X-Detections": str(len(detections))})

    @app.post("/v1/segment", response_model=SegmentResponse, openapi_extra=IMAGE_BODY, responses=_ERRORS,
              summary="Segment an image (per-pixel classes)", tags=["inference"])
    async def segment(
        request: Request, model: str | None = ModelParam, classes: str | None = ClassesParam,
        format: Literal["png", "rle"] = Query("png", description="png: the whole label map as a base64 PNG; "
                                                                 "rle: one COCO RLE mask per class present."),
    ) -> SegmentResponse:
        started = time.perf_counter()
        backend, image, outcome, selected, decode_ms = await run(request, model, "segmentation", classes)
        label_map = outcome.result
        if isinstance(label_map, Detections):
            raise WrongTask(f"model {backend.info.name!r} returned detections, not a label map")
        info = backend.info
        classes_out = await run_in_threadpool(segment_classes, label_map, info.categories,
                                              offset=info.label_offset, classes=selected, with_rle=format == "rle")
        png = await run_in_threadpool(encode_label_map_png, label_map) if format == "png" else None
        return SegmentResponse(request_id=request.state.request_id, model=ref(backend),
                               image=ImageSize(width=image.width, height=image.height), format=format,
                               label_map_png=png, classes=classes_out, timings=timings(started, decode_ms, outcome))

    @app.get("/v1/models", response_model=ModelsResponse, summary="Served models", tags=["models"])
    async def models() -> ModelsResponse:
        return ModelsResponse(default=state.default, models=[
            ModelDescription(name=b.info.name, version=b.info.version, task=b.info.task, arch=b.info.arch,
                             backend=b.info.backend, precision=b.info.precision,
                             categories=list(b.info.categories),
                             score_threshold=b.info.score_threshold, max_detections=b.info.max_detections,
                             max_batch_size=state.batchers[n].max_batch_size, ready=state.ready)
            for n, b in state.backends.items()
        ])

    @app.get("/healthz", response_model=Status, summary="Liveness: the process answers", tags=["ops"])
    async def healthz() -> Status:
        return Status(status="ok")

    @app.get("/readyz", response_model=Status, responses={503: {"model": Status}}, tags=["ops"],
             summary="Readiness: models loaded, warmed up and their backends reachable")
    async def readyz() -> Response:
        if not state.ready:
            detail = f"model loading failed: {state.load_error}" if state.load_error else "models are loading"
            return JSONResponse(Status(status="not_ready", detail=detail).model_dump(), status_code=503)
        for name, backend in state.backends.items():
            if not await run_in_threadpool(backend.is_ready):
                return JSONResponse(Status(status="not_ready", detail=f"backend of {name!r} is unreachable")
                                    .model_dump(), status_code=503)
        return JSONResponse(Status(status="ready").model_dump())

    @app.get("/metrics", summary="Prometheus metrics", tags=["ops"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        for name, batcher in state.batchers.items():
            state.metrics.queue_depth.labels(name).set(batcher.depth)
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @app.get("/", include_in_schema=False)
    async def demo_page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=root + app.openapi_url, title=f"{app.title} - Swagger UI",
                                   swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(openapi_url=root + app.openapi_url, title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png", with_google_fonts=False)
        page.headers["Content-Security-Policy"] = "img-src 'self' data:"  # not ReDoc's attribution logo from its CDN
        return page

    app.mount(DOCS_ASSETS, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")  # before /static
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    paths = {route.path for route in app.routes if hasattr(route, "path")}
    app.add_middleware(RequestContext, state=state, paths=paths)
    return app
