"""FastAPI dependencies of the endpoints: the app state, the query parameters, the model lookup, and the limits a
request passes before its image is decoded.

No ``from __future__ import annotations`` here: FastAPI reads these signatures, whose ``Depends`` name closures.
Every dependency is ``async``: FastAPI would run a plain function on a worker thread, a hop per request for nothing.
"""
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query, Request

from zoo.vocabulary import SEGMENTATION

from .limits import Upload, read_upload
from .results import parse_classes
from .state import Served, ServerState

O = TypeVar("O")  # noqa: E741  (an endpoint's own options)


async def app_state(request: Request) -> ServerState:
    """The app's one state object (``app.state.serving``)."""
    return request.app.state.serving


AppState = Annotated[ServerState, Depends(app_state)]
ModelName = Annotated[str | None, Query(description="A served model's name (GET /v1/models); the server's default "
                                                    "if absent.", max_length=200)]
Classes = Annotated[str | None, Query(max_length=10_000, description="Comma-separated class names or labels to "
                                                                     "keep, e.g. `person,car` or `1,3`.")]


@dataclass(frozen=True)
class DetectOptions:
    score_threshold: float | None
    max_detections: int | None


async def detect_options(
    score_threshold: Annotated[float | None, Query(
        ge=0.0, le=1.0, allow_inf_nan=False, description="Keep detections scoring at least this (default: the "
                                                         "server's --score-threshold); the model's own floor (GET "
                                                         "/v1/models) still applies.")] = None,
    max_detections: Annotated[int | None, Query(ge=1, le=1000, description="Keep at most this many detections, "
                                                                           "best first (default: the model's).")
                              ] = None,
) -> DetectOptions:
    """The query parameters that filter detections."""
    return DetectOptions(score_threshold, max_detections)


@dataclass(frozen=True)
class Job(Generic[O]):
    """An admitted request: its id, its model, the classes it keeps (None: all), its endpoint's options, its
    upload, and when it began (``time.perf_counter()``)."""

    request_id: str
    served: Served
    classes: set[int] | None
    options: O
    upload: Upload
    started: float


@dataclass(frozen=True)
class _Target(Generic[O]):
    served: Served
    classes: set[int] | None
    options: O
    started: float


def model_lookup(task: str, options: Callable[..., Awaitable[O]]) -> Callable[..., Awaitable[_Target[O]]]:
    """A dependency: the endpoint's ``options`` (validated first: a bad parameter is a 422 before anything else),
    then the requested model for ``task`` (503 while loading, 404 unknown, 422 other task) and its classes."""

    async def lookup(request: Request, state: AppState, chosen: Annotated[Any, Depends(options)],
               model: ModelName = None, classes: Classes = None) -> _Target[O]:
        started = time.perf_counter()
        served = state.resolve(model, task)
        request.state.model = served.name
        info = served.backend.info
        selected = parse_classes(classes, info.categories, info.label_offset, background=task == SEGMENTATION)
        return _Target(served, selected, chosen, started)

    return lookup


def admitted(task: str, options: Callable[..., Awaitable[O]]) -> Callable[..., Awaitable[Job[O]]]:
    """A dependency: the request once its model is found (:func:`model_lookup`), its queue has room (503 with
    Retry-After) and its upload has arrived within the size limit (413) and the body deadline (408)."""

    async def admit(state: AppState, target: Annotated[_Target[O], Depends(model_lookup(task, options))],
                    request: Request) -> Job[O]:
        target.served.batcher.check_capacity()
        upload = await read_upload(request, state.config.max_upload_bytes, state.config.body_timeout_s)
        return Job(request.state.request_id, target.served, target.classes, target.options, upload, target.started)

    return admit

