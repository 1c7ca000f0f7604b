"""COCO-format detection datasets (COCO, Objects365 v1/v2, users' own) on top of :class:`AnnotationIndex`.

Labels follow the zoo's convention: label ``l`` (1..C) names ``categories[l - 1]``, 0 is background. When the
dataset's category names differ from the model's (a user's set finetuned from an Objects365 model), names are matched
with :func:`zoo.categories.map_indices`; names with no match raise an error (``on_unknown="error"``) or are dropped
with a logged count (``"skip"``), never given a wrong label.
"""
from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..transforms import Target
from .index import AnnotationIndex

log = logging.getLogger(__name__)

Transform = Callable[[torch.Tensor, Target, torch.Generator], tuple[torch.Tensor, Target]]


def read_image(path: Path) -> torch.Tensor:
    """RGB float tensor ``[3, H, W]`` on [0, 1]; a missing or unreadable file raises naming it."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except OSError as exc:
        raise OSError(f"cannot read image {path}: {exc}") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def resolve_labels(dataset_names: Sequence[str], categories: str | Sequence[str] | None, on_unknown: str,
                   source: str) -> tuple[tuple[str, ...], np.ndarray]:
    """``(model category names, label of each dataset category position)``; label -1 drops that category."""
    if on_unknown not in ("error", "skip"):
        raise ValueError(f"on_unknown must be 'error' or 'skip', not {on_unknown!r}")
    if categories is None:
        return tuple(dataset_names), np.arange(1, len(dataset_names) + 1, dtype=np.int64)
    from zoo.categories import get_categories, map_indices

    names = tuple(get_categories(categories)) if isinstance(categories, str) else tuple(categories)
    mapping = map_indices(list(names), list(dataset_names))
    unknown = [n for n, m in zip(dataset_names, mapping) if m is None]
    if unknown and on_unknown == "error":
        shown = ", ".join(repr(n) for n in unknown[:10]) + (f" (+{len(unknown) - 10} more)" if len(unknown) > 10
                                                            else "")
        target = categories if isinstance(categories, str) else f"{len(names)} given names"
        raise ValueError(f"{source}: {len(unknown)} categories have no match in {target}: {shown}; rename them, "
                         f"or pass on_unknown='skip' to drop their boxes")
    labels = np.array([-1 if m is None else m + 1 for m in mapping], dtype=np.int64)
    if unknown:
        log.warning("%s: dropping boxes of %d categories with no match in the model's categories: %s", source,
                    len(unknown), ", ".join(unknown[:10]))
    return names, labels


class CocoDetection(Dataset):
    """Images and boxes of a COCO-format JSON.

    ``__getitem__`` takes an index or ``(index, seed)`` (the seed drives the random transforms, so a sample's
    augmentation depends only on the sampler, not on the worker) and returns ``(image [3, H, W] on [0, 1], target)``
    with ``boxes`` xyxy float32, ``labels`` int64, ``image_id`` and ``orig_size``.
    """

    def __init__(self, ann_file: str | Path, image_root: str | Path, *, categories: str | Sequence[str] | None = None,
                 on_unknown: str = "error", skip_crowd: bool = True, skip_empty: bool = True,
                 check_files: bool = True, transforms: Transform | None = None,
                 cache_dir: str | Path | None = None) -> None:
        self.ann_file = Path(ann_file)
        self.image_root = Path(image_root)
        self.transforms = transforms
        self.index = AnnotationIndex.load(self.ann_file, cache_dir)
        self.categories, self._label_of = resolve_labels(self.index.category_names, categories, on_unknown,
                                                         self.ann_file.name)
        self.skip_crowd = skip_crowd

        labels = self._label_of[np.asarray(self.index.categories)]
        usable = labels > 0
        if skip_crowd:
            usable &= np.asarray(self.index.iscrowd) == 0
        if (labels <= 0).any():
            log.warning("%s: %d boxes dropped for categories outside the model's", self.ann_file.name,
                        int((labels <= 0).sum()))
        image_of_box = np.repeat(np.arange(len(self.index), dtype=np.int32), np.diff(self.index.box_offsets))
        per_image = np.bincount(image_of_box[usable], minlength=len(self.index))
        keep = np.ones(len(self.index), dtype=bool)
        if skip_empty:
            keep &= per_image > 0
            if (~keep).any():
                log.info("%s: skipping %d images without usable boxes", self.ann_file.name, int((~keep).sum()))
        if check_files:
            present = self._present_files()
            if (~present).any():
                missing = np.flatnonzero(~present)
                log.warning("%s: skipping %d images missing under %s (first: %s)", self.ann_file.name, len(missing),
                            self.image_root, self.index.file_name(int(missing[0])))
            keep &= present
        self.positions = np.flatnonzero(keep)
        if len(self.positions) == 0:
            raise ValueError(f"{self.ann_file}: no usable images under {self.image_root}")

    def _present_files(self) -> np.ndarray:
        """Which images exist, listing each referenced folder once instead of one stat per image."""
        names = self.index.file_names()
        by_dir: dict[str, list[int]] = defaultdict(list)
        for i, name in enumerate(names):
            by_dir[os.path.dirname(name)].append(i)
        present = np.zeros(len(names), dtype=bool)
        for folder, members in by_dir.items():
            try:
                listed = set(os.listdir(self.image_root / folder))
            except OSError:
                continue
            for i in members:
                present[i] = os.path.basename(names[i]) in listed
        return present

    def __len__(self) -> int:
        return len(self.positions)

    def aspect_ratios(self) -> np.ndarray:
        """Width / height of every kept image, from the index (no image is opened)."""
        pos = self.positions
        return np.asarray(self.index.widths)[pos] / np.asarray(self.index.heights)[pos]

    def image_info(self, i: int) -> dict:
        p = int(self.positions[i])
        return {"id": int(self.index.image_ids[p]), "file_name": self.index.file_name(p),
                "width": int(self.index.widths[p]), "height": int(self.index.heights[p])}

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, Target]:
        i, seed = key if isinstance(key, tuple) else (key, 0)
        p = int(self.positions[i])
        path = self.image_root / self.index.file_name(p)
        image = read_image(path)
        xyxy, cats, crowd = self.index.annotations(p)
        labels = self._label_of[np.asarray(cats)]
        usable = labels > 0
        if self.skip_crowd:
            usable &= np.asarray(crowd) == 0
        boxes = torch.from_numpy(np.array(xyxy[usable], dtype=np.float32)).reshape(-1, 4)
        h, w = image.shape[-2:]
        ih, iw = int(self.index.heights[p]), int(self.index.widths[p])
        if (h, w) != (ih, iw):
            log.warning("%s: image is %dx%d but the annotations say %dx%d; boxes rescaled", path, w, h, iw, ih)
            boxes *= torch.tensor([w / iw, h / ih, w / iw, h / ih])
        target: Target = {"boxes": boxes, "labels": torch.from_numpy(labels[usable]),
                          "image_id": torch.tensor(int(self.index.image_ids[p])), "orig_size": torch.tensor([h, w])}
        if self.transforms is not None:
            image, target = self.transforms(image, target, torch.Generator().manual_seed(int(seed)))
        return image, target


def collate(batch: list) -> tuple[list, list]:
    """Detection batches are lists: images differ in size (the model pads them)."""
    return [b[0] for b in batch], [b[1] for b in batch]
