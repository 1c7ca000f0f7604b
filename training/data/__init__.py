"""Datasets for training and evaluation, and the factory that builds them from a recipe."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .citypersons import CityPersons
from .coco import CocoDetection, read_image, resolve_labels
from .index import AnnotationError, AnnotationIndex
from .segmentation import SegmentationDataset, ade20k, voc_segmentation

__all__ = ["AnnotationError", "AnnotationIndex", "CityPersons", "CocoDetection", "SegmentationDataset",
           "VocDetection", "ade20k", "build_dataset", "voc_segmentation"]

log = logging.getLogger(__name__)


class VocDetection(Dataset):
    """Pascal VOC detection: ``ImageSets/Main/<split>.txt``, ``Annotations/*.xml``, ``JPEGImages/*.jpg``.
    "difficult" boxes are left out of training targets, as in the VOC protocol. ``categories``: a category key or
    list the labels follow, None for the dataset's own names (sorted)."""

    def __init__(self, root: str | Path, split: str = "trainval", *,
                 categories: str | Sequence[str] | None = "voc",
                 on_unknown: str = "error", transforms: Callable | None = None) -> None:
        from .voc import read_voc_xml

        root = Path(root)
        listing = root / "ImageSets" / "Main" / f"{split}.txt"
        if not listing.is_file():
            raise FileNotFoundError(f"VOC split list not found: {listing}")
        self.items = [read_voc_xml(root / "Annotations" / f"{line.split()[0]}.xml")
                      for line in listing.read_text().splitlines() if line.strip()]
        names = sorted({n for a in self.items for n in a.names})
        self.categories, labels = resolve_labels(names, categories, on_unknown, str(listing))
        self._label = dict(zip(names, labels.tolist()))
        self.root = root
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.items)

    def aspect_ratios(self) -> np.ndarray:
        return np.array([a.width / a.height for a in self.items])

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        i, seed = key if isinstance(key, tuple) else (key, 0)
        ann = self.items[i]
        image = read_image(self.root / "JPEGImages" / ann.filename)
        labels = torch.tensor([self._label[n] for n in ann.names], dtype=torch.int64)
        keep = (labels > 0) & ~torch.tensor(ann.difficult, dtype=torch.bool)
        target = {"boxes": ann.boxes[keep], "labels": labels[keep], "image_id": torch.tensor(i),
                  "orig_size": torch.tensor(image.shape[-2:])}
        if self.transforms is not None:
            image, target = self.transforms(image, target, torch.Generator().manual_seed(int(seed)))
        return image, target


def build_dataset(fmt: str, ann: str, images: str, *, categories: str | Sequence[str] | None = None,
                  on_unknown: str = "error", transforms: Callable | None = None, train: bool = True) -> Dataset:
    """The dataset of format ``fmt`` ("coco", "voc", "citypersons", "voc_seg", "ade20k")."""
    if not ann:
        raise ValueError(f"no annotation path given for the {fmt!r} dataset (set train_ann=... / val_ann=...)")
    if fmt == "coco":
        return CocoDetection(ann, images, categories=categories, on_unknown=on_unknown, transforms=transforms,
                             skip_empty=train)
    if fmt == "voc":
        return VocDetection(ann, "trainval" if train else "test", categories=categories or "voc",
                            on_unknown=on_unknown, transforms=transforms)
    if fmt == "citypersons":
        return CityPersons(ann, images, "train" if train else "val", transforms=transforms, skip_empty=train)
    if fmt == "voc_seg":
        return voc_segmentation(ann, "train" if train else "val", transforms=transforms)
    if fmt == "ade20k":
        return ade20k(ann, "training" if train else "validation", transforms=transforms)
    raise ValueError(f"unknown dataset format {fmt!r}: coco, voc, citypersons, voc_seg or ade20k")
