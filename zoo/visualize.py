"""Drawing detections on an image, shared by `zoo predict` and the service's visualize endpoint."""
from __future__ import annotations

import colorsys
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont


def _colour(label: int) -> tuple[int, int, int]:
    hue = (label * 0.618033988749895) % 1.0  # golden-ratio spacing keeps neighbouring labels apart
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(
    image: Image.Image,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[int],
    scores: Sequence[float],
    names: Sequence[str],
    width: int | None = None,
    captions: bool = True,
) -> Image.Image:
    """Return a copy of ``image`` with each box outlined and (with ``captions``) captioned ``name score``.

    ``names[i]`` is the caption of detection ``i``; ``labels`` pick the colour."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = width or max(2, round(max(out.size) / 400))
    font = ImageFont.load_default(size=max(12, round(max(out.size) / 60)))
    for box, label, score, name in zip(boxes, labels, scores, names):
        x1, y1, x2, y2 = (float(v) for v in box)
        colour = _colour(int(label))
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        if not captions:
            continue
        caption = f"{name} {float(score):.2f}"
        tx1, ty1, tx2, ty2 = draw.textbbox((x1, y1), caption, font=font)
        top = y1 - (ty2 - ty1) - 2 if y1 - (ty2 - ty1) - 2 >= 0 else y1
        draw.rectangle((x1, top, x1 + (tx2 - tx1) + 4, top + (ty2 - ty1) + 2), fill=colour)
        draw.text((x1 + 2, top), caption, fill=(0, 0, 0), font=font)
    return out
