"""Semantic-segmentation datasets for PSPNet: Pascal VOC ``SegmentationClass`` PNGs and ADE20K (SceneParsing).

Masks are class indices with 255 = ignore. VOC PNGs are palette images whose indices are the labels (0 background,
1..20 classes, 255 object borders). ADE20K's ``annotations/*.png`` hold 0 = "other" and 1..150 classes; they are
shifted to 0..149 with 0 -> 255 (ignored), as MMSegmentation's ``reduce_zero_label``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .coco import read_image

IGNORE_INDEX = 255


def read_mask(path: Path, reduce_zero_label: bool = False) -> torch.Tensor:
    """Class-index mask ``[H, W]`` int64 from a palette or grayscale PNG (never converted through RGB)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I;16", "I"):
                raise ValueError(f"{path}: mask mode {im.mode} is not a class-index image (palette or grayscale)")
            arr = np.asarray(im).astype(np.int64)
    except FileNotFoundError:
        raise FileNotFoundError(f"mask not found: {path}") from None
    if reduce_zero_label:
        arr = np.where(arr == 0, IGNORE_INDEX, arr - 1)
    return torch.from_numpy(arr)


class SegmentationDataset(Dataset):
    """Pairs of image and mask files; ``__getitem__`` takes an index or ``(index, seed)``."""

    def __init__(self, images: Sequence[Path], masks: Sequence[Path], num_classes: int, *,
                 reduce_zero_label: bool = False, transforms: Callable | None = None) -> None:
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        if not images:
            raise ValueError("no images")
        self.images, self.masks = list(images), list(masks)
        self.num_classes = num_classes
        self.reduce_zero_label = reduce_zero_label
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        i, seed = key if isinstance(key, tuple) else (key, 0)
        image = read_image(self.images[i])
        mask = read_mask(self.masks[i], self.reduce_zero_label)
        if mask.shape != image.shape[-2:]:
            raise ValueError(f"{self.masks[i]}: mask is {tuple(mask.shape)} but its image is "
                             f"{tuple(image.shape[-2:])}")
        bad = (mask != IGNORE_INDEX) & ((mask < 0) | (mask >= self.num_classes))
        if bad.any():
            raise ValueError(f"{self.masks[i]}: label {int(mask[bad][0])} outside 0..{self.num_classes - 1}")
        target = {"mask": mask}
        if self.transforms is not None:
            image, target = self.transforms(image, target, torch.Generator().manual_seed(int(seed)))
        return image, target


def voc_segmentation(root: str | Path, split: str = "train", **kwargs) -> SegmentationDataset:
    """``VOC2012/`` with ``ImageSets/Segmentation/<split>.txt``, ``JPEGImages/``, ``SegmentationClass/``."""
    root = Path(root)
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise FileNotFoundError(f"VOC split list not found: {listing}")
    ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    return SegmentationDataset([root / "JPEGImages" / f"{i}.jpg" for i in ids],
                               [root / "SegmentationClass" / f"{i}.png" for i in ids], 21, **kwargs)


def ade20k(root: str | Path, split: str = "training", **kwargs) -> SegmentationDataset:
    """``ADEChallengeData2016/`` with ``images/<split>/*.jpg`` and ``annotations/<split>/*.png``."""
    root = Path(root)
    images = sorted((root / "images" / split).glob("*.jpg"))
    if not images:
        raise FileNotFoundError(f"no ADE20K images under {root / 'images' / split}")
    masks = [root / "annotations" / split / f"{p.stem}.png" for p in images]
    return SegmentationDataset(images, masks, 150, reduce_zero_label=True, **kwargs)
