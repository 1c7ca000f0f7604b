"""From a backend's raw result to the API's answer: per-request filtering, class selection, mask encoding."""
from __future__ import annotations

import base64
import re
from collections.abc import Sequence

import numpy as np

from .backends.base import Detections
from .errors import BadParameter
from .schemas import RLE, Detection, SegmentClass

_LABEL = re.compile(r"(-?)0*([0-9]+)")


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class LabelLookup:
    """The label of a class named by its name (case-insensitive) or its label number, for a model whose
    ``categories[0]`` has label ``offset`` (1 for detectors and segmenters with a background class);
    ``background``: label 0 is a selectable "background" class (segmenters whose answers name it)."""

    def __init__(self, categories: Sequence[str], offset: int = 1, background: bool = False) -> None:
        self.categories = categories
        self.by_name = {name.strip().lower(): i + offset for i, name in enumerate(categories)}
        self.lowest, self.end = offset, len(categories) + offset
        if background and offset == 1:
            self.by_name.setdefault("background", 0)
            self.lowest = 0

    def __call__(self, token: str) -> int:
        """The label of ``token`` (surrounding spaces ignored); an unknown name or a label out of range: 422."""
        token = token.strip()
        number = _LABEL.fullmatch(token)
        if number:  # ASCII digits only (str.isdigit takes "²", which int() refuses), any count of leading zeros
            sign, digits = number.groups()
            label = int(sign + digits) if len(digits) <= 9 else None  # int() refuses over 4300 digits
            if label is None or not self.lowest <= label < self.end:
                raise BadParameter(f"class label {_shorten(token)} is out of range {self.lowest}..{self.end - 1}")
            return label
        if token.lower() in self.by_name:
            return self.by_name[token.lower()]
        sample = ", ".join(list(self.categories)[:8])
        raise BadParameter(f"unknown class {_shorten(token)!r}; this model's classes include: {sample}"
                           f"{', ...' if len(self.categories) > 8 else ''} (see GET /v1/models)")


def parse_classes(text: str | None, categories: Sequence[str], offset: int = 1,
                  background: bool = False) -> set[int] | None:
    """Labels selected by a comma-separated list of names (case-insensitive) or label numbers (see
    :class:`LabelLookup`); None keeps all."""
    if text is None or not text.strip():
        return None
    lookup = LabelLookup(categories, offset, background)
    return {lookup(token) for token in text.split(",") if token.strip()}


def select_detections(dets: Detections, categories: Sequence[str], *, width: int, height: int,
                      score_threshold: float, max_detections: int, classes: set[int] | None) -> list[Detection]:
    """Detections at or above the threshold, of the selected classes, best first, boxes clipped to the image."""
    keep = dets.scores >= score_threshold
    if classes is not None:
        keep &= np.isin(dets.labels, list(classes))
    order = np.flatnonzero(keep)[np.argsort(-dets.scores[keep], kind="stable")][:max_detections]
    boxes = dets.boxes[order].astype(np.float64)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    out = []
    for box, score, raw in zip(boxes.round(2), dets.scores[order], dets.labels[order]):
        label = int(raw)
        name = categories[label - 1] if 1 <= label <= len(categories) else f"label_{label}"
        x1, y1, x2, y2 = (float(v) for v in box)
        out.append(Detection(box=(x1, y1, x2, y2), score=round(float(score), 5), label=label, name=name))
    return out


def encode_rle(mask: np.ndarray) -> RLE:
    """COCO uncompressed RLE of a boolean [H, W] mask (column-major runs, the first counting zeros)."""
    flat = np.asfortranarray(mask).ravel(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return RLE(size=(int(mask.shape[0]), int(mask.shape[1])), counts=counts)


def encode_label_map_png(label_map: np.ndarray) -> str:
    """Base64 PNG of a label map (:func:`zoo.letterbox.encode_label_map`: 8-bit grey when every label fits, else
    16-bit)."""
    from zoo.letterbox import encode_label_map

    return base64.b64encode(encode_label_map(label_map)).decode("ascii")


def segment_classes(label_map: np.ndarray, categories: Sequence[str], *, offset: int, classes: set[int] | None,
                    with_rle: bool) -> list[SegmentClass]:
    """One entry per label present in the map (selected ones only), largest area first."""
    areas = np.bincount(label_map.ravel(), minlength=len(categories) + offset)
    total = max(label_map.size, 1)
    out = []
    for raw in np.argsort(-areas, kind="stable"):
        label = int(raw)
        if areas[label] == 0 or (classes is not None and label not in classes):
            continue
        index = label - offset
        name = categories[index] if 0 <= index < len(categories) else "background"
        out.append(SegmentClass(label=label, name=name, area=int(areas[label]),
                                fraction=round(float(areas[label]) / total, 6),
                                rle=encode_rle(label_map == label) if with_rle else None))
    return out
