"""Pictures of results against ground truth for many images (the Objects365 paper's Fig. 9): a COCO ground-truth
reader keyed by file name, the mapping of its category names to a model's classes, and a writer of one comparison
picture per image plus a contact sheet, worst images first. Shared by `zoo predict --compare` and `python -m training
diagnose --pictures`; numpy and Pillow only.

Worst first means most errors first, an error being a false positive or a false negative at the comparison's IoU
threshold; ties go to more false negatives, then to the name.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .atomic import atomic_write
from .categories import normalize_name
from .visualize import Comparison, contact_sheet, draw_comparison

SHEET_NAME = "contact_sheet.jpg"


@dataclasses.dataclass(frozen=True)
class ImageTruth:
    """One annotated image: its COCO ``file_name``, size, and boxes (xyxy) with their category ids and crowd flags."""

    file_name: str
    width: int
    height: int
    boxes: np.ndarray
    category_ids: np.ndarray
    crowd: np.ndarray


@dataclasses.dataclass(frozen=True)
class CocoTruth:
    """A COCO-format ground truth as :class:`ImageTruth` by image id, with the category names by id."""

    images: dict[int, ImageTruth]
    categories: dict[int, str]

    def find(self, path: Path) -> ImageTruth | None:
        """The image whose ``file_name`` is ``path``'s name (or, where several share that name, the one whose whole
        ``file_name`` ends ``path``); None when none is."""
        found = self._by_name.get(path.name, [])
        if len(found) > 1:
            found = [t for t in found if path.as_posix().endswith("/" + t.file_name.lstrip("/"))]
            if len(found) > 1:
                raise ValueError(f"{path}: {len(found)} annotated images have this file_name; give distinct names")
        return found[0] if found else None

    @functools.cached_property
    def _by_name(self) -> dict[str, list[ImageTruth]]:
        index: dict[str, list[ImageTruth]] = {}
        for truth in self.images.values():
            index.setdefault(Path(truth.file_name).name, []).append(truth)
        return index


def load_coco_truth(source: str | Path | Mapping[str, Any]) -> CocoTruth:
    """Read a COCO-format annotation file (or its dict)."""
    if not isinstance(source, Mapping):
        with open(source) as f:
            source = json.load(f)
    if not isinstance(source, Mapping) or not {"images", "annotations", "categories"} <= source.keys():
        raise ValueError("the annotation file must be COCO JSON with 'images', 'annotations' and 'categories'")
    try:
        categories = {int(c["id"]): str(c["name"]) for c in source["categories"]}
        boxes: dict[int, list[list[float]]] = {int(img["id"]): [] for img in source["images"]}
        labels: dict[int, list[int]] = {i: [] for i in boxes}
        crowd: dict[int, list[bool]] = {i: [] for i in boxes}
        for ann in source["annotations"]:
            x, y, w, h = (float(v) for v in ann["bbox"])
            boxes[int(ann["image_id"])].append([x, y, x + w, y + h])
            labels[int(ann["image_id"])].append(int(ann["category_id"]))
            crowd[int(ann["image_id"])].append(bool(ann.get("iscrowd", 0)))
        images = {i: ImageTruth(str(img["file_name"]), int(img.get("width", 0)), int(img.get("height", 0)),
                                np.asarray(boxes[i], dtype=np.float64).reshape(-1, 4),
                                np.asarray(labels[i], dtype=np.int64), np.asarray(crowd[i], dtype=bool))
                  for i, img in ((int(img["id"]), img) for img in source["images"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed COCO annotation (images need id and file_name, annotations image_id, "
                         f"category_id and bbox [x, y, w, h], categories id and name): {exc!r}") from exc
    return CocoTruth(images, categories)


def map_categories(categories: Mapping[int, str], classes: Sequence[str]) -> tuple[dict[int, int], list[str]]:
    """``categories`` (id -> name) onto a model's ``classes`` by normalised name: (category id -> label 1..K, the
    names that are no class of the model, sorted)."""
    index = {normalize_name(name): k + 1 for k, name in enumerate(classes)}
    mapping = {cid: index[normalize_name(name)] for cid, name in categories.items() if normalize_name(name) in index}
    return mapping, sorted(name for cid, name in categories.items() if cid not in mapping)


def worst_first(item: tuple[str, Comparison]) -> tuple[int, int, str]:
    """Sort key of a (name, comparison) pair: most errors (FP + FN) first, then most false negatives, then name."""
    name, c = item
    return -c.errors, -c.fn, name


def counts(c: Comparison) -> str:
    """``TP a  FP b  FN c``."""
    return f"TP {c.tp}  FP {c.fp}  FN {c.fn}"


class PictureWriter:
    """Writes ``OUT/<stem>.jpg``, one comparison picture per image (:func:`draw_comparison`), keeping a thumbnail of
    each for the contact sheet ``OUT/contact_sheet.jpg`` (:meth:`write_sheet`), worst images first."""

    def __init__(self, out: str | Path, names: Sequence[str] | None, *, captions: bool = True, columns: int = 4,
                 thumb: int = 256) -> None:
        self.out, self.names, self.captions = Path(out), names, captions
        self.columns, self.thumb = columns, thumb
        self._thumbs: dict[str, tuple[Comparison, Image.Image]] = {}

    def add(self, stem: str, image: Image.Image, comparison: Comparison) -> Path:
        """Draw ``comparison`` on ``image``, save it as ``OUT/<stem>.jpg`` (atomically; ``<stem>_2.jpg`` and so on
        for a stem already written) and return that path."""
        name, k = stem, 1
        while name in self._thumbs:  # images of the same name from different folders
            k += 1
            name = f"{stem}_{k}"
        picture = draw_comparison(image, comparison, self.names, captions=self.captions)
        target = self.out / f"{name}.jpg"
        with atomic_write(target) as f:
            picture.save(f, format="JPEG", quality=92, subsampling=0)  # 4:4:4 keeps thin lines their colour
        picture.thumbnail((self.thumb, self.thumb))
        self._thumbs[name] = (comparison, picture)
        return target

    def write_sheet(self) -> Path:
        """The contact sheet of the pictures added so far, worst first, each captioned with its name and counts."""
        if not self._thumbs:
            raise ValueError("no pictures were written: nothing to put on a contact sheet")
        ranked = sorted(((stem, c) for stem, (c, _) in self._thumbs.items()), key=worst_first)
        captions = [f"{counts(c)}  {stem}" for stem, c in ranked]  # the counts first: a long name is cut
        sheet = contact_sheet([self._thumbs[stem][1] for stem, _ in ranked], captions, columns=self.columns,
                              thumb=self.thumb)
        target = self.out / SHEET_NAME
        with atomic_write(target) as f:
            sheet.save(f, format="JPEG", quality=92, subsampling=0)
        return target
