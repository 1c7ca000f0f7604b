"""Photo -> fixed-size model input, and detections back to photo pixels (NumPy and Pillow only).

The one definition of the letterbox used by every inference path (eager serving, ONNX Runtime, OpenVINO, Triton, the
export parity check, and, with the same geometry in torch, the letterboxing models such as YOLOX): a photo of any
size is resized keeping its aspect ratio to fit a fixed ``H x W``, placed top-left and padded with ``pad_value`` (so
box coordinates only need dividing by the scale). This module imports nothing from the package: it is copied into the
Triton model repository, where the preprocessing step runs it without torch.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never a half-grey image

_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}  # EXIF orientation -> the transposition that shows the image upright


class ImageDecodeError(ValueError):
    """The bytes are not an image that can be read (corrupt, truncated, empty, or no image at all)."""


class ImageTooLarge(ImageDecodeError):
    """The image declares more pixels than allowed (a decompression bomb is found from its header)."""


def sniff_format(data: bytes) -> str | None:
    """The format named by the file's signature, or None when it is none of JPEG, PNG, WebP."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def decode_image(data: bytes, *, formats: tuple[str, ...] | None = None, max_pixels: int | None = None
                 ) -> Image.Image:
    """Decode image bytes to an upright RGB image: the EXIF orientation applied, 16-bit grey scaled to 8 bits.

    ``formats``: the Pillow formats to try (None: any Pillow reads); ``max_pixels``: refuse larger images from their
    header, before any pixel is decoded (:class:`ImageTooLarge`). Anything unreadable raises
    :class:`ImageDecodeError`.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data), formats=formats)  # reads the header only: the size, no pixels
            width, height = opened.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLarge(f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels")
            opened.load()
            image: Image.Image = opened
            transpose = _orientation(image)
            if image.mode.startswith("I"):  # 16-bit grey (PNG): the top byte; convert() clips all over 255 to white
                image = Image.fromarray((np.asarray(image).clip(0, 65535) >> 8).astype(np.uint8))
            if transpose is not None:
                image = image.transpose(transpose)
            rgb = image if image.mode == "RGB" else image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge("image declares more pixels than the decoder allows (decompression bomb)") from None
    except ImageDecodeError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, UnidentifiedImageError) as exc:
        what = f"corrupt or truncated {formats[0]} image" if formats and len(formats) == 1 else \
            f"not a decodable image ({len(data)} bytes)"
        raise ImageDecodeError(f"{what}: {exc}") from None
    if rgb.width == 0 or rgb.height == 0:
        raise ImageDecodeError("image has zero width or height")
    return rgb


def _orientation(image: Image.Image) -> Image.Transpose | None:
    """The transposition the EXIF orientation tag asks for. Read, never rewritten as ``ImageOps.exif_transpose``
    does: re-encoding a malformed EXIF block raised struct.error or TypeError, for an image that decodes fine."""
    orientation = image.getexif().get(ExifTags.Base.Orientation)
    return _TRANSPOSE.get(orientation) if isinstance(orientation, int) else None


def letterbox_geometry(photo_h: int, photo_w: int, size: tuple[int, int]) -> tuple[float, int, int]:
    """``(scale, resized height, resized width)`` of a ``photo_h x photo_w`` photo letterboxed into
    ``size = (H, W)``: ``scale = min(H / h, W / w)``, sides rounded and kept within the canvas."""
    height, width = size
    scale = min(height / photo_h, width / photo_w)
    new_h = max(1, min(height, round(photo_h * scale)))
    new_w = max(1, min(width, round(photo_w * scale)))
    return scale, new_h, new_w


def letterbox(image: Image.Image, size: tuple[int, int], pad_value: float = 0.0) -> tuple[np.ndarray, float]:
    """``(array [3, H, W] float32 RGB on [0, 1], scale)``: the image resized by ``scale`` (Pillow's bilinear,
    antialiased when shrinking) to fit ``size = (H, W)``, top-left, the rest filled with ``pad_value`` (on [0, 1];
    YOLOX's grey 114 is ``114 / 255``)."""
    height, width = size
    scale, new_h, new_w = letterbox_geometry(image.height, image.width, size)
    image = image.convert("RGB")
    resized = image if (new_w, new_h) == image.size else image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    out = np.full((3, height, width), pad_value, dtype=np.float32)
    out[:, :new_h, :new_w] = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return out, scale


def boxes_to_photo(boxes: np.ndarray, scale: float, photo_size: tuple[int, int]) -> np.ndarray:
    """Boxes ``[..., 4]`` xyxy in letterboxed pixels -> photo pixels, clipped to ``photo_size = (H, W)``."""
    out: np.ndarray = np.asarray(boxes, dtype=np.float32) / np.float32(scale)
    out[..., 0::2] = np.clip(out[..., 0::2], 0, photo_size[1])
    out[..., 1::2] = np.clip(out[..., 1::2], 0, photo_size[0])
    return out


def labels_to_photo(labels: np.ndarray, scale: float, photo_size: tuple[int, int]) -> np.ndarray:
    """A label map ``[H, W]`` of the letterboxed input -> int64 ``photo_size = (H, W)``: the photo's region
    cropped and resized back with nearest-neighbour."""
    height, width = photo_size
    valid_h = max(1, min(labels.shape[0], round(height * scale)))
    valid_w = max(1, min(labels.shape[1], round(width * scale)))
    crop = np.ascontiguousarray(labels[:valid_h, :valid_w], dtype=np.int32)
    return np.asarray(Image.fromarray(crop).resize((width, height), Image.Resampling.NEAREST), dtype=np.int64)


def encode_label_map(labels: np.ndarray) -> bytes:
    """A label map as a lossless PNG: 8-bit greyscale when every label is below 256, else 16-bit."""
    dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
    buffer = io.BytesIO()
    Image.fromarray(labels.astype(dtype)).save(buffer, format="PNG")
    return buffer.getvalue()

