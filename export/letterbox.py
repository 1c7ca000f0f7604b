"""Photo -> fixed-size model input, and detections back to photo pixels (NumPy and Pillow only).

The exported graphs take a fixed ``H x W``; photos of any size are resized keeping their aspect ratio to fit, placed
top-left and zero-padded (so box coordinates only need dividing by the scale). This module is also copied into the
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


def letterbox(image: Image.Image, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """``(array [3, H, W] float32 on [0, 1], scale)``: the RGB image resized by ``scale`` (bilinear) to fit
    ``size = (H, W)``, top-left, zero padding."""
    height, width = size
    scale = min(height / image.height, width / image.width)
    new_w = max(1, min(width, round(image.width * scale)))
    new_h = max(1, min(height, round(image.height * scale)))
    resized = image.convert("RGB").resize((new_w, new_h), Image.BILINEAR)
    out = np.zeros((3, height, width), dtype=np.float32)
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

