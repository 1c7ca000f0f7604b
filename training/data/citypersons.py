"""CityPersons (Zhang et al. 2017) in its Cityscapes JSON form.

Files: ``gtBboxCityPersons/<split>/<city>/<stem>_gtBboxCityPersons.json`` holding ``imgWidth``, ``imgHeight`` and
``objects`` with ``label`` ("pedestrian", "rider", "sitting person", "person (other)", "person group", "ignore"),
``bbox`` and ``bboxVis`` as ``[x, y, w, h]``; images ``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png``.

Training positives are pedestrians at least ``min_height`` pixels tall and ``min_visibility`` visible (the
"reasonable" setting, defaults 50 px and 0.65); every other box is an ignore region, kept in
:meth:`CityPersons.annotation` for miss-rate evaluation and left out of training targets (torchvision's detectors
have no ignore regions). All positives are label 1 (``citypersons`` categories: person).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from .coco import read_image
from .index import AnnotationError

LABELS = ("pedestrian", "rider", "sitting person", "person (other)", "person group", "ignore")


@dataclass(frozen=True)
class CityPersonsAnnotation:
    image: Path
    width: int
    height: int
    boxes: np.ndarray  # [N, 4] xyxy positives
    ignore: np.ndarray  # [M, 4] xyxy ignore regions


def _xyxy(path: Path, i: int, obj: dict, key: str) -> list[float]:
    box = obj.get(key)
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
        raise AnnotationError(f"{path}: objects[{i}].{key} = {box!r} is not [x, y, w, h]")
    x, y, w, h = (float(v) for v in box)
    return [x, y, x + w, y + h]


def read_citypersons_json(path: Path, image: Path, min_height: float = 50.0, min_visibility: float = 0.65
                          ) -> CityPersonsAnnotation:
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise AnnotationError(f"{path}: not valid JSON ({exc})") from None
    for key in ("imgWidth", "imgHeight", "objects"):
        if key not in doc:
            raise AnnotationError(f"{path}: no '{key}' field")
    w, h = int(doc["imgWidth"]), int(doc["imgHeight"])
    pos: list[list[float]] = []  # reasonable pedestrians
    ign: list[list[float]] = []  # ignore regions
    for i, obj in enumerate(doc["objects"]):
        label = obj.get("label")
        if label not in LABELS:
            raise AnnotationError(f"{path}: objects[{i}].label = {label!r}; expected one of {LABELS}")
        box = _xyxy(path, i, obj, "bbox")
        vis = _xyxy(path, i, obj, "bboxVis") if "bboxVis" in obj else box
        area = (box[2] - box[0]) * (box[3] - box[1])
        visibility = (vis[2] - vis[0]) * (vis[3] - vis[1]) / area if area > 0 else 0.0
        box = [min(max(box[0], 0), w), min(max(box[1], 0), h), min(max(box[2], 0), w), min(max(box[3], 0), h)]
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        reasonable = label == "pedestrian" and box[3] - box[1] >= min_height and visibility >= min_visibility
        (pos if reasonable else ign).append(box)
    return CityPersonsAnnotation(image, w, h, np.array(pos, np.float32).reshape(-1, 4),
                                 np.array(ign, np.float32).reshape(-1, 4))


class CityPersons(Dataset):
    """CityPersons training/evaluation set; ``__getitem__`` takes an index or ``(index, seed)``."""

    categories = ("person",)

    def __init__(self, ann_root: str | Path, image_root: str | Path, split: str = "train", *,
                 min_height: float = 50.0, min_visibility: float = 0.65, skip_empty: bool = True,
                 transforms: Callable | None = None) -> None:
        ann_dir, image_dir = Path(ann_root) / split, Path(image_root) / split
        files = sorted(ann_dir.glob("*/*_gtBboxCityPersons.json"))
        if not files:
            raise FileNotFoundError(f"no *_gtBboxCityPersons.json under {ann_dir}")
        self.items: list[CityPersonsAnnotation] = []
        for f in files:
            stem = f.name[: -len("_gtBboxCityPersons.json")]
            image = image_dir / f.parent.name / f"{stem}_leftImg8bit.png"
            ann = read_citypersons_json(f, image, min_height, min_visibility)
            if skip_empty and len(ann.boxes) == 0:
                continue
            self.items.append(ann)
        if not self.items:
            raise ValueError(f"{ann_dir}: no image has a reasonable pedestrian")
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.items)

    def annotation(self, i: int) -> CityPersonsAnnotation:
        return self.items[i]

    def aspect_ratios(self) -> np.ndarray:
        return np.array([a.width / a.height for a in self.items])

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        i, seed = key if isinstance(key, tuple) else (key, 0)
        ann = self.items[i]
        image = read_image(ann.image)
        boxes = torch.from_numpy(ann.boxes.copy())
        target = {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64),
                  "image_id": torch.tensor(i), "orig_size": torch.tensor(image.shape[-2:])}
        if self.transforms is not None:
            image, target = self.transforms(image, target, torch.Generator().manual_seed(int(seed)))
        return image, target
