"""Liveness, readiness and Prometheus metrics."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..dependencies import AppState
from ..schemas import Status

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=Status, summary="Liveness: the process answers")
async def healthz() -> Status:
    return Status(status="ok")


@router.get("/readyz", response_model=Status, responses={503: {"model": Status}},
            summary="Readiness: models loaded, warmed up and their backends reachable")
async def readyz(state: AppState) -> Response:
    if (detail := state.not_ready_detail()) is not None:
        return JSONResponse(Status(status="not_ready", detail=detail).model_dump(), status_code=503)
    for name, backend in state.backends.items():
        if not await run_in_threadpool(backend.is_ready):
            return JSONResponse(Status(status="not_ready", detail=f"backend of {name!r} is unreachable")
                                .model_dump(), status_code=503)
    return JSONResponse(Status(status="ready").model_dump())


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(state: AppState) -> Response:
    for name, batcher in state.batchers.items():
        state.metrics.queue_depth.labels(name).set(batcher.depth)
    return Response(state.metrics.render(), media_type=state.metrics.content_type)
