"""Reading an upload within limits and decoding it into RGB pixels, safely; the HTTP server's read deadlines.

Every way an upload can be wrong ends in a :class:`~serving.errors.ServingError` with a 4xx status: too slow to
arrive (408), too many bytes (413), too many pixels declared in the header, i.e. a decompression bomb (413, found
before any pixel is decoded), a type other than JPEG, PNG or WebP (415), an empty, corrupt or truncated file (422).
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from zoo.letterbox import ImageDecodeError, ImageTooLarge, sniff_format
from zoo.letterbox import decode_image as zoo_decode_image

from .errors import BadParameter, InvalidImage, PayloadTooLarge, UnsupportedMediaType, UploadTimeout

MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
ACCEPTED_CONTENT_TYPES = (*MEDIA_TYPES.values(), "application/octet-stream")
_DECLARED_FORMAT = {"image/jpeg": "JPEG", "image/jpg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # [H, W, 3] uint8 RGB, EXIF orientation applied
    format: str  # "JPEG" | "PNG" | "WEBP"

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def _media_type(header: str | None) -> str | None:
    return header.split(";", 1)[0].strip().lower() or None if header else None


async def _limited(stream: AsyncIterator[bytes], max_bytes: int) -> AsyncGenerator[bytes, None]:
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > max_bytes:
            raise PayloadTooLarge(f"upload exceeds the limit of {max_bytes} bytes")
        yield chunk


@dataclass(frozen=True)
class Upload:
    """An uploaded image as received: its bytes, its declared media type, and a multipart form's text fields."""

    data: bytes
    declared: str | None
    fields: dict[str, str] = field(default_factory=dict)


async def read_upload(request: Request, max_bytes: int, timeout_s: float) -> Upload:
    """The uploaded file, from a multipart form (first file part, with the form's text fields) or the raw body,
    read within ``timeout_s`` (408 and the connection closed after, for a client too slow to send it)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise PayloadTooLarge(f"upload of {length} bytes exceeds the limit of {max_bytes} bytes")
    declared = _media_type(request.headers.get("content-type"))
    try:
        async with asyncio.timeout(timeout_s):
            if declared == "multipart/form-data":
                return await _read_multipart(request, max_bytes)
            if declared is not None and declared not in ACCEPTED_CONTENT_TYPES and declared not in _DECLARED_FORMAT:
                raise UnsupportedMediaType(
                    f"content type {declared!r} is not accepted; send JPEG, PNG or WebP as the raw body "
                    "(image/jpeg, image/png, image/webp, application/octet-stream) or as a multipart/form-data file"
                )
            chunks = [chunk async for chunk in _limited(request.stream(), max_bytes)]
    except ClientDisconnect:
        raise BadParameter("client disconnected before the upload was complete") from None
    except TimeoutError:
        raise UploadTimeout(f"the upload was not received within {timeout_s:g} s",
                            headers={"Connection": "close"}) from None
    return Upload(b"".join(chunks), declared)


async def _read_multipart(request: Request, max_bytes: int) -> Upload:
    parser = MultiPartParser(request.headers, _limited(request.stream(), max_bytes), max_files=1, max_fields=16)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise BadParameter(f"malformed multipart body: {exc.message}") from None
    try:
        upload = next((v for _, v in form.multi_items() if isinstance(v, UploadFile)), None)
        if upload is None:
            raise BadParameter("multipart body has no file part; send the image as a file field named 'file'")
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        return Upload(await upload.read(), _media_type(upload.content_type), fields)
    finally:
        await form.close()


def decode_image(data: bytes, declared: str | None, max_pixels: int) -> DecodedImage:
    """Decode JPEG, PNG or WebP bytes to RGB (:func:`zoo.letterbox.decode_image`: EXIF orientation applied, the
    pixel count checked from the header), refusing oversized or broken files before they cost memory."""
    if not data:
        raise InvalidImage("empty upload: the body holds no image")
    fmt = sniff_format(data)
    if fmt is None:
        expected = _DECLARED_FORMAT.get(declared or "")
        if expected is not None:
            raise InvalidImage(f"the body is declared {declared} but is not a {expected} file")
        raise UnsupportedMediaType("unsupported image type: the body is not a JPEG, PNG or WebP file")
    try:
        rgb = zoo_decode_image(data, formats=(fmt,), max_pixels=max_pixels)
    except ImageTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from None
    except ImageDecodeError as exc:
        raise InvalidImage(str(exc)) from None
    return DecodedImage(pixels=np.array(rgb, dtype=np.uint8), format=fmt)


PROTOCOL_HOOKS = ("connection_made", "connection_lost", "on_message_begin", "on_headers_complete",
                  "on_message_complete", "shutdown")  # uvicorn's HttpToolsProtocol members deadline_protocol uses


def deadline_protocol(header_timeout_s: float, body_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools) with the read deadlines uvicorn lacks: a request's headers must arrive
    within ``header_timeout_s`` of its first byte (or of the connection opening), else the connection is closed
    (slow-loris); its body within ``body_timeout_s`` of the headers, else the connection closes once the request is
    answered (the endpoints reading an upload answer 408 at that deadline).

    uvicorn has no public hook for this: the subclass relies on its protocol's parser callbacks and its ``loop``,
    ``transport`` and ``shutdown`` members (PROTOCOL_HOOKS); tests/serving/test_serving_connections.py fails if
    they change."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class DeadlineProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def _arm(self, seconds: float, expire: Callable[[], None]) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(header_timeout_s, transport.close)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm(header_timeout_s, self.transport.close)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._arm(body_timeout_s, self.shutdown)  # close now if answered, else after the answer

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return DeadlineProtocol
