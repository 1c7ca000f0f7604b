"""Every error becomes the same JSON answer (:class:`~serving.schemas.ErrorResponse`) carrying the request id."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import BackendUnavailable, ServingError
from .schemas import ErrorBody, ErrorResponse

log = logging.getLogger("serving")


def error_response(status: int, code: str, message: str, request: Request,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error answer: ``{"error": {"code", "message"}, "request_id"}``."""
    rid = request.scope.get("state", {}).get("request_id", "-")
    body = ErrorResponse(error=ErrorBody(code=code, message=message), request_id=rid)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


async def _serving_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServingError)
    if isinstance(exc, BackendUnavailable):
        log.warning("backend unavailable: %s", exc.message)
    return error_response(exc.status, exc.code, exc.message, request, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = [f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in exc.errors()]
    return error_response(422, "bad_parameter", "; ".join(parts), request)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), request, getattr(exc, "headers", None))


def add_error_handlers(app: FastAPI) -> None:
    """Answer our errors, FastAPI's parameter validation and Starlette's HTTP errors (404, 405) in that shape."""
    app.add_exception_handler(ServingError, _serving_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
