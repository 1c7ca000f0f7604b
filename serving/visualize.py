"""Drawing detections onto the image for ``POST /v1/detect:visualize``."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from zoo.visualize import draw_detections as zoo_draw

from .schemas import Detection


def draw_detections(pixels: np.ndarray, detections: list[Detection], image_format: str = "PNG") -> bytes:
    """The image with each box outlined and labelled "name score" (zoo's drawing), encoded as PNG or JPEG."""
    image = zoo_draw(Image.fromarray(pixels), [d.box for d in detections], [d.label for d in detections],
                     [d.score for d in detections], [d.name for d in detections])
    buffer = io.BytesIO()
    if image_format.upper() == "JPEG":
        image.save(buffer, format="JPEG", quality=90)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()
