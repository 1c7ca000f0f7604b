"""Oracle models for the ``python -m training eval`` tests: they read the answer off images drawn in flat colours, so
every metric's value on the tiny datasets is known in advance. They know the VOC categories and recognise
``SEEN``; "dog" rectangles are never found.

Importing this module registers the architectures ``oracle_detector_test`` and ``oracle_segmenter_test``; the eval
subprocess imports it with ``--import evaluation_oracles`` (``tests/`` on PYTHONPATH).
"""
from __future__ import annotations

import torch
from torch import nn

from zoo.categories import get_categories
from zoo.models import _BUILDERS, register_builder

VOC = get_categories("voc")
COLOURS = {"person": (220, 20, 60), "car": (0, 0, 142), "dog": (250, 170, 30)}
SEEN = ("person", "car")


def _mask(image: torch.Tensor, name: str) -> torch.Tensor:
    """Pixels of ``image`` ([3, H, W] on [0, 1]) in ``name``'s colour."""
    colour = torch.tensor(COLOURS[name], dtype=torch.int64)[:, None, None]
    return ((image * 255).round().to(torch.int64) == colour).all(0)


class OracleDetector(nn.Module):
    """One box per recognised colour: the bounding box of its pixels (continuous coordinates), score 0.9."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("unused", torch.zeros(1))

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        outputs = []
        for image in images:
            boxes, labels = [], []
            for name in SEEN:
                ys, xs = torch.nonzero(_mask(image, name), as_tuple=True)
                if len(xs):
                    boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                    labels.append(VOC.index(name) + 1)
            outputs.append({"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                            "scores": torch.full((len(boxes),), 0.9),
                            "labels": torch.tensor(labels, dtype=torch.int64)})
        return outputs


class OracleSegmenter(OracleDetector):
    """Logits of a one-hot map: the class of each recognised colour, background elsewhere."""

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        out = torch.zeros(len(images), len(VOC) + 1, *images.shape[-2:])
        for b, image in enumerate(images):
            label = torch.zeros(images.shape[-2:], dtype=torch.int64)
            for name in SEEN:
                label[_mask(image, name)] = VOC.index(name) + 1
            out[b].scatter_(0, label[None], 1.0)
        return {"out": out}


for _arch, _cls in (("oracle_detector_test", OracleDetector), ("oracle_segmenter_test", OracleSegmenter)):
    if _arch not in _BUILDERS:
        register_builder(_arch)(lambda num_classes, _cls=_cls, **_: _cls())
