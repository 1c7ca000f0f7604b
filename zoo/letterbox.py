"""Photo -> fixed-size model input, and detections back to photo pixels (NumPy and Pillow only).

The one definition of the letterbox used by every inference path (eager serving, ONNX Runtime, OpenVINO, Triton, the
export parity check, and, with the same geometry in torch, the letterboxing models such as YOLOX): a photo of any
size is resized keeping its aspect ratio to fit a fixed ``H x W``, placed top-left and padded with ``pad_value`` (so
box coordinates only need dividing by the scale). This module imports nothing from the package: it is copied into the
Triton model repository, where the preprocessing step runs it without torch.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageDecodeError(ValueError):
    """The bytes are not an image Pillow can read."""


def decode_image(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageDecodeError(f"not a decodable image ({len(data)} bytes): {exc}") from None
    return image.convert("RGB")


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
    resized = image if (new_w, new_h) == image.size else image.resize((new_w, new_h), Image.BILINEAR)
    out = np.full((3, height, width), pad_value, dtype=np.float32)
    out[:, :new_h, :new_w] = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return out, scale


def boxes_to_photo(boxes: np.ndarray, scale: float, photo_size: tuple[int, int]) -> np.ndarray:
    """Boxes ``[..., 4]`` xyxy in letterboxed pixels -> photo pixels, clipped to ``photo_size = (H, W)``."""
    out = np.asarray(boxes, dtype=np.float32) / np.float32(scale)
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
    return np.asarray(Image.fromarray(crop).resize((width, height), Image.NEAREST), dtype=np.int64)


def encode_label_map(labels: np.ndarray) -> bytes:
    """A label map as a lossless PNG: 8-bit greyscale when every label is below 256, else 16-bit."""
    dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
    buffer = io.BytesIO()
    Image.fromarray(labels.astype(dtype)).save(buffer, format="PNG")
    return buffer.getvalue()

