"""Errors that become HTTP answers: each carries its status, a stable code and a message meant for the client."""
from __future__ import annotations


class ServingError(Exception):
    """Base class: ``status`` is the HTTP status, ``code`` a short machine-readable name."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class PayloadTooLarge(ServingError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ServingError):
    status, code = 415, "unsupported_media_type"


class InvalidImage(ServingError):
    status, code = 422, "invalid_image"


class UploadTimeout(ServingError):
    status, code = 408, "request_timeout"


class BadParameter(ServingError):
    status, code = 422, "bad_parameter"


class ModelNotFound(ServingError):
    status, code = 404, "model_not_found"


class WrongTask(ServingError):
    status, code = 422, "wrong_task"


class Overloaded(ServingError):
    status, code = 503, "overloaded"


class BackendUnavailable(ServingError):
    status, code = 503, "backend_unavailable"


class NotReady(ServingError):
    status, code = 503, "not_ready"


class RequestTimeout(ServingError):
    status, code = 504, "timeout"


class InternalError(ServingError):
    """A bug: an exception nothing else turned into an answer (logged with its traceback)."""

    status, code = 500, "internal_error"
