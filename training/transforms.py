"""Training transforms for detection and segmentation; every random choice draws from the generator passed in, so a
sample's augmentation is a function of its seed alone (deterministic across workers, processes and resumes)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Target = dict[str, torch.Tensor]


def _uniform(gen: torch.Generator) -> float:
    return float(torch.rand((), generator=gen))


@dataclass(frozen=True)
class ResizeShortLong:
    """Scale so the short side is ``s`` and the long side at most ``max_size`` (the paper's 800x1333, §4.1);
    ``s`` is drawn from ``min_sizes`` (one value: fixed scale; several: multi-scale training)."""

    min_sizes: Sequence[int] = (800,)
    max_size: int = 1333

    def scale_for(self, h: int, w: int, short: int) -> float:
        return min(short / min(h, w), self.max_size / max(h, w))

    def __call__(self, image: torch.Tensor, target: Target, gen: torch.Generator) -> tuple[torch.Tensor, Target]:
        short = self.min_sizes[int(torch.randint(len(self.min_sizes), (), generator=gen))]
        h, w = image.shape[-2:]
        scale = self.scale_for(h, w, short)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        if size != (h, w):
            image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        target = dict(target)
        if "boxes" in target:
            sy, sx = size[0] / h, size[1] / w
            target["boxes"] = target["boxes"] * torch.tensor([sx, sy, sx, sy], dtype=target["boxes"].dtype)
        return image, target


@dataclass(frozen=True)
class HorizontalFlip:
    p: float = 0.5

    def __call__(self, image: torch.Tensor, target: Target, gen: torch.Generator) -> tuple[torch.Tensor, Target]:
        if _uniform(gen) >= self.p:
            return image, target
        image = image.flip(-1)
        target = dict(target)
        if "boxes" in target:
            w = image.shape[-1]
            b = target["boxes"]
            target["boxes"] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1)
        if "mask" in target:
            target["mask"] = target["mask"].flip(-1)
        return image, target


@dataclass(frozen=True)
class RandomScaleCrop:
    """Segmentation: scale by a factor in ``scale_range``, pad (image 0, mask ``ignore_index``) and crop ``size``."""

    size: int = 512
    scale_range: tuple[float, float] = (0.5, 2.0)
    ignore_index: int = 255

    def __call__(self, image: torch.Tensor, target: Target, gen: torch.Generator) -> tuple[torch.Tensor, Target]:
        lo, hi = self.scale_range
        scale = lo + (hi - lo) * _uniform(gen)
        h, w = image.shape[-2:]
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        mask = F.interpolate(target["mask"][None, None].float(), size=size, mode="nearest")[0, 0].long()
        ph, pw = max(0, self.size - size[0]), max(0, self.size - size[1])
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), value=0.0)
            mask = F.pad(mask, (0, pw, 0, ph), value=self.ignore_index)
        h, w = image.shape[-2:]
        top = int(torch.randint(h - self.size + 1, (), generator=gen))
        left = int(torch.randint(w - self.size + 1, (), generator=gen))
        image = image[:, top:top + self.size, left:left + self.size]
        return image.contiguous(), {**target, "mask": mask[top:top + self.size, left:left + self.size].contiguous()}


@dataclass(frozen=True)
class Compose:
    steps: tuple

    def __call__(self, image: torch.Tensor, target: Target, gen: torch.Generator) -> tuple[torch.Tensor, Target]:
        for step in self.steps:
            image, target = step(image, target, gen)
        return image, target


def detection_train(min_sizes: Sequence[int] = (800,), max_size: int = 1333, flip: float = 0.5) -> Compose:
    """The paper's training pipeline: resize (short ``min_sizes``, long <= ``max_size``) and horizontal flip."""
    return Compose((ResizeShortLong(tuple(min_sizes), max_size), HorizontalFlip(flip)))


def segmentation_train(crop: int = 512, scale_range: tuple[float, float] = (0.5, 2.0), flip: float = 0.5) -> Compose:
    return Compose((RandomScaleCrop(crop, scale_range), HorizontalFlip(flip)))
