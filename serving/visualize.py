"""The pictures of ``POST /v1/detect:visualize``: detections drawn on the image, or compared with posted ground
truth in the Objects365 paper's Fig. 9 colours (zoo's drawing)."""
from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from zoo.visualize import Comparison, compare, draw_comparison
from zoo.visualize import draw_detections as zoo_draw

from .schemas import Detection


def draw_detections(pixels: np.ndarray, detections: list[Detection], image_format: str = "PNG") -> bytes:
    """The image with each box outlined and labelled "name score" (zoo's drawing), encoded as PNG or JPEG."""
    image = zoo_draw(Image.fromarray(pixels), [d.box for d in detections], [d.label for d in detections],
                     [d.score for d in detections], [d.name for d in detections])
    return encode(image, image_format)


def draw_compared(pixels: np.ndarray, detections: list[Detection], gt_boxes: Sequence[Sequence[float]],
                  gt_labels: Sequence[int], *, categories: Sequence[str], iou_threshold: float,
                  image_format: str = "PNG") -> tuple[bytes, Comparison]:
    """The detections matched to the ground truth (xyxy boxes, labels 1..C) at ``iou_threshold``, drawn with a
    legend: matched ground truth green, matched detections light blue, false negatives red, false positives blue."""
    comparison = compare([d.box for d in detections], [d.label for d in detections], [d.score for d in detections],
                         gt_boxes, gt_labels, iou_threshold=iou_threshold)
    picture = draw_comparison(Image.fromarray(pixels), comparison, names=categories)
    return encode(picture, image_format), comparison


def encode(image: Image.Image, image_format: str) -> bytes:
    """``image`` as PNG, or as JPEG (quality 90) when ``image_format`` is ``"JPEG"``."""
    buffer = io.BytesIO()
    if image_format.upper() == "JPEG":
        image.save(buffer, format="JPEG", quality=90)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()
