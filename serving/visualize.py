"""Drawing detections onto the image for ``POST /v1/detect:visualize``."""
from __future__ import annotations

import colorsys
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .schemas import Detection


def _colour(label: int) -> tuple[int, int, int]:
    hue = (label * 0.618033988749895) % 1.0  # golden-ratio steps keep neighbouring labels apart
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(pixels: np.ndarray, detections: list[Detection], image_format: str = "PNG") -> bytes:
    """The image with each box outlined and labelled "name score", encoded as PNG or JPEG."""
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    scale = max(image.width, image.height)
    width = max(1, round(scale / 400))
    font = ImageFont.load_default(size=max(10, round(scale / 60)))
    for det in detections:
        colour = _colour(det.label)
        x1, y1, x2, y2 = det.box
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        text = f"{det.name} {det.score:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text, font=font)
        lift = bottom - top + 2 * width
        ty = y1 - lift if y1 - lift >= 0 else y1
        draw.rectangle((x1, ty, x1 + right - left + 2 * width, ty + lift), fill=colour)
        draw.text((x1 + width, ty + width - (top - y1)), text, fill=(0, 0, 0), font=font)
    buffer = io.BytesIO()
    if image_format.upper() == "JPEG":
        image.save(buffer, format="JPEG", quality=90)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()
