"""Photos in, detections in photo pixels out: the eager path shared by ``zoo predict``, the Python API and the
service's torch backend.

Each photo is letterboxed (:func:`zoo.letterbox.letterbox`) into the model's fixed input size, exactly as the exported
backends (ONNX Runtime, OpenVINO, Triton) feed their graphs, so that every path answers the same; boxes come back
divided by the letterbox scale and clipped to the photo.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from .letterbox import boxes_to_photo, letterbox

if TYPE_CHECKING:
    import torch
    from torch import nn


def input_size_of(model: nn.Module) -> tuple[int, int] | None:
    """The fixed input of a model from ``zoo.load`` (its spec's :meth:`~zoo.preprocess.Preprocessing.input_size`,
    or the size its letterbox was set to), None for a model without a spec."""
    transform = getattr(model, "transform", None)
    if transform is not None and hasattr(transform, "pad_value"):  # a letterboxing model (YOLOX)
        return tuple(transform.size)
    spec = getattr(model, "spec", None)
    return None if spec is None else spec.preprocessing.input_size()


Photo = str | Path | Image.Image | np.ndarray


def as_array(image: Photo) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` of an image file (EXIF orientation applied, as the service does), a Pillow image or
    an array."""
    if isinstance(image, (str, Path)):
        with Image.open(image) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 array [H, W, 3], got {array.dtype} {array.shape}")
    return array


def detect(model: nn.Module, images: Sequence[Photo], *,
           input_size: tuple[int, int] | None = None, pad_value: float | None = None,
           device: str | torch.device | None = None) -> list[dict[str, np.ndarray]]:
    """Run a zoo detector on photos (file paths, Pillow images or RGB uint8 arrays): ``[{"boxes" [N, 4] xyxy,
    "scores" [N], "labels" [N] (1..C)}]`` in each photo's pixels; label ``l`` names ``model.categories[l - 1]``.
    ``input_size`` (H, W) defaults to :func:`input_size_of`; ``None`` there passes photos unchanged."""
    import torch

    size = input_size or input_size_of(model)
    spec = getattr(model, "spec", None)
    pad = pad_value if pad_value is not None else (spec.preprocessing.pad_value if spec is not None else 0.0)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    arrays = [as_array(image) for image in images]
    if size is None:
        inputs = [torch.from_numpy(a.copy()).to(device).permute(2, 0, 1).float().div_(255.0) for a in arrays]
        scales = [1.0] * len(arrays)
    else:
        boxed = [letterbox(Image.fromarray(a), size, pad) for a in arrays]
        inputs = [torch.from_numpy(array).to(device) for array, _ in boxed]
        scales = [scale for _, scale in boxed]
    with torch.inference_mode():
        outputs = model(inputs)
    return [{"boxes": boxes_to_photo(o["boxes"].float().cpu().numpy(), scale, a.shape[:2]),
             "scores": o["scores"].float().cpu().numpy(), "labels": o["labels"].cpu().numpy().astype(np.int64)}
            for o, scale, a in zip(outputs, scales, arrays)]
