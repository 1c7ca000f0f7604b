"""What the OpenAPI document says about the inference endpoints' bodies and error answers."""
from __future__ import annotations

from typing import Any

from .schemas import ErrorResponse

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_FILE = {"type": "string", "format": "binary"}


def image_body(**form_fields: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` of an endpoint that takes an image: the raw body, or a multipart form with the file field
    ``file`` and the given text ``form_fields`` (name -> JSON schema)."""
    form = {"type": "object", "required": ["file"], "properties": {"file": _FILE, **form_fields}}
    return {
        "requestBody": {
            "required": True,
            "description": "A JPEG, PNG or WebP image: the raw body, or a multipart/form-data file field `file`.",
            "content": {
                "multipart/form-data": {"schema": form},
                "image/jpeg": _BINARY, "image/png": _BINARY, "image/webp": _BINARY,
                "application/octet-stream": _BINARY,
            },
        }
    }


IMAGE_BODY = image_body()
_ERROR_TEXTS = {
    404: "Unknown model.",
    408: "The upload was not received within the body deadline; the connection is closed.",
    413: "Upload too large, or too many pixels (decompression bomb).",
    415: "Not a JPEG, PNG or WebP image.",
    422: "Corrupt or truncated image, or bad parameters.",
    500: "Internal error (a bug); quote the request id when reporting it.",
    503: "Not ready, queue full (see Retry-After) or backend unreachable.",
    504: "Decoding and inference did not finish within the request timeout.",
}
ERRORS: dict[int | str, dict[str, Any]] = {
    **{status: {"model": ErrorResponse, "description": text} for status, text in _ERROR_TEXTS.items()},
    400: {"description": "Malformed HTTP request, refused by the HTTP parser before the application (e.g. an "
                         "overlong URL); plain-text body. So is the 503 of a server past its connection limit."},
}
