"""The one place for normalisation constants, the resize policy and post-processing defaults.

Evaluation, export and serving read these values from a model's spec (or from the metadata an export carries);
none of them keeps a second copy of the numbers.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .letterbox import letterbox, letterbox_geometry

__all__ = ["Preprocessing", "letterbox", "letterbox_geometry", "IMAGENET_MEAN", "IMAGENET_STD", "DETECTION_800",
           "SEGMENTATION_512", "AERIAL_400", "YOLOX_416", "mmdet_resized_size"]

# ImageNet statistics on the [0, 1] scale. MMDetection's [123.675, 116.28, 103.53] / [58.395, 57.12, 57.375] on the
# [0, 255] scale in RGB order are the same numbers divided by 255.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a model input and how raw detections are kept.

    Images enter models as RGB float tensors on [0, 1]; the model normalises with ``mean``/``std`` and
    - ``resize="shorter_side"`` (torchvision's detectors): resizes so that the short side is ``min_size`` and the
      long side at most ``max_size`` (the paper's 800x1333), padding to a multiple of ``size_divisible``;
    - ``resize="letterbox"`` (YOLOX): fits the image into ``min_size x max_size`` (H x W) keeping its aspect ratio,
      top-left, the rest ``pad_value`` (on [0, 1], before normalisation); :func:`letterbox` is the same step on a
      Pillow image, used by every serving backend.
    ``channels="BGR"`` reverses the channels after normalisation (models trained on OpenCV's order).
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    min_size: int = 800
    max_size: int = 1333
    size_divisible: int = 32
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    max_detections: int = 100
    resize: Literal["shorter_side", "letterbox"] = "shorter_side"
    pad_value: float = 0.0
    channels: Literal["RGB", "BGR"] = "RGB"
    extra: dict[str, Any] = field(default_factory=dict)

    def input_size(self, side: int | None = None) -> tuple[int, int]:
        """The fixed ``(H, W)`` that serving letterboxes photos into and exports take: ``side x side`` when given,
        else the letterbox size, else a square at ``min_size`` (photos then reach the model unscaled by its own
        transform, as ``min_size`` square fits ``max_size``)."""
        if side is not None:
            return (side, side)
        if self.resize == "letterbox":
            return (self.min_size, self.max_size)
        return (self.min_size, self.min_size)

    def transform_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of torchvision's detection models that set their GeneralizedRCNNTransform."""
        return {"min_size": self.min_size, "max_size": self.max_size, "image_mean": list(self.mean),
                "image_std": list(self.std), "size_divisible": self.size_divisible}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        data = dict(data)
        for key in ("mean", "std"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def mmdet_resized_size(height: int, width: int, short: int, long: int) -> tuple[int, int]:
    """``(H, W)`` of MMDetection's keep-ratio ``Resize`` (mmcv ``rescale_size``): scale ``min(long / max side,
    short / min side)``, sides ``int(side * scale + 0.5)``; torchvision floors instead (1202 where this is 1203)."""
    scale = min(long / max(height, width), short / min(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


DETECTION_800 = Preprocessing()
SEGMENTATION_512 = Preprocessing(min_size=512, max_size=512, size_divisible=8, score_threshold=0.0, max_detections=0)
# The shipped demo model: 10 cm/pixel NEON aerial tiles at native scale (400 px tiles), crowns scored at 0.3.
AERIAL_400 = Preprocessing(min_size=400, max_size=1333, size_divisible=32, score_threshold=0.3, nms_threshold=0.4,
                           max_detections=300)
# YOLOX as trained by Megvii: letterbox into 416 x 416 top-left, grey 114 padding, BGR on 0..255 (no mean/std);
# class-aware NMS at 0.65 as in its COCO evaluation (``yolox/exp/yolox_base.py``: nmsthre 0.65).
YOLOX_416 = Preprocessing(mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255), min_size=416, max_size=416,
                          size_divisible=32, score_threshold=0.05, nms_threshold=0.65, max_detections=100,
                          resize="letterbox", pad_value=114 / 255, channels="BGR")
