"""Reading an upload within limits and decoding it into RGB pixels, safely.

Every way an upload can be wrong ends in a :class:`~serving.errors.ServingError` with a 4xx status: too many bytes
(413), too many pixels declared in the header, i.e. a decompression bomb (413, found before any pixel is decoded), a
type other than JPEG, PNG or WebP (415), an empty, corrupt or truncated file (422).
"""
from __future__ import annotations

import io
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from .errors import BadParameter, InvalidImage, PayloadTooLarge, UnsupportedMediaType

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never a half-grey image

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


def sniff_format(data: bytes) -> str | None:
    """The format named by the file's signature, or None when it is none of JPEG, PNG, WebP."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _media_type(header: str | None) -> str | None:
    return header.split(";", 1)[0].strip().lower() or None if header else None


async def _limited(stream: AsyncIterator[bytes], max_bytes: int) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > max_bytes:
            raise PayloadTooLarge(f"upload exceeds the limit of {max_bytes} bytes")
        yield chunk


async def read_upload(request: Request, max_bytes: int) -> tuple[bytes, str | None]:
    """The uploaded file's bytes and declared media type, from a multipart form (first file part) or the raw body."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise PayloadTooLarge(f"upload of {length} bytes exceeds the limit of {max_bytes} bytes")
    declared = _media_type(request.headers.get("content-type"))
    try:
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
    return b"".join(chunks), declared


async def _read_multipart(request: Request, max_bytes: int) -> tuple[bytes, str | None]:
    parser = MultiPartParser(request.headers, _limited(request.stream(), max_bytes), max_files=1, max_fields=16)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise BadParameter(f"malformed multipart body: {exc.message}") from None
    try:
        upload = next((v for _, v in form.multi_items() if isinstance(v, UploadFile)), None)
        if upload is None:
            raise BadParameter("multipart body has no file part; send the image as a file field named 'file'")
        return await upload.read(), _media_type(upload.content_type)
    finally:
        await form.close()


def decode_image(data: bytes, declared: str | None, max_pixels: int) -> DecodedImage:
    """Decode JPEG, PNG or WebP bytes to RGB, refusing oversized or broken files before they cost memory."""
    if not data:
        raise InvalidImage("empty upload: the body holds no image")
    fmt = sniff_format(data)
    if fmt is None:
        expected = _DECLARED_FORMAT.get(declared or "")
        if expected is not None:
            raise InvalidImage(f"the body is declared {declared} but is not a {expected} file")
        raise UnsupportedMediaType("unsupported image type: the body is not a JPEG, PNG or WebP file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[fmt])
            width, height = image.size
            if width * height > max_pixels:
                raise PayloadTooLarge(
                    f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels"
                )
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PayloadTooLarge("image declares more pixels than the decoder allows (decompression bomb)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.UnidentifiedImageError) as exc:
        raise InvalidImage(f"corrupt or truncated {fmt} image: {exc}") from None
    if rgb.width == 0 or rgb.height == 0:
        raise InvalidImage("image has zero width or height")
    return DecodedImage(pixels=np.array(rgb, dtype=np.uint8), format=fmt)
