"""Shared material for the training tests: a tiny RetinaNet registered in ``zoo.models`` and tiny COCO-format sets of
drawn shapes (each category a colour and shape, so a detector can learn them in a few dozen iterations).

Importing this module registers the architecture ``tiny_retinanet_test``; training subprocesses import it through the
recipe's ``imports`` field with ``tests/`` on PYTHONPATH.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetHead

from zoo.models import _BUILDERS, register_builder
from zoo.models.retinanet import set_background_rows_
from zoo.preprocess import Preprocessing

ARCH = "tiny_retinanet_test"
TESTS = Path(__file__).resolve().parent
# Category name -> (RGB colour, aspect w/h): Objects365 v1 names that COCO shares, plus one COCO lacks.
SHAPES = {"person": ((40, 80, 230), 0.5), "car": ((230, 40, 40), 2.0), "dog": ((40, 200, 60), 1.0),
          "lamp": ((230, 220, 40), 1.0)}


class _Backbone(nn.Module):
    out_channels = 16

    def __init__(self) -> None:
        super().__init__()
        self.c3 = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU(),
                                nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())
        self.c4 = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        c3 = self.c3(x)
        return OrderedDict(p3=c3, p4=self.c4(c3))


def tiny_retinanet(num_classes: int, *, preprocessing: Preprocessing | None = None, **_: object) -> RetinaNet:
    pre = preprocessing or Preprocessing(min_size=96, max_size=160, score_threshold=0.05)
    anchors = AnchorGenerator(sizes=((16, 24), (32, 48)), aspect_ratios=((0.5, 1.0, 2.0),) * 2)
    head = RetinaNetHead(16, anchors.num_anchors_per_location()[0], num_classes)
    with torch.no_grad():
        set_background_rows_(head.classification_head.cls_logits, num_classes)
    return RetinaNet(_Backbone(), num_classes, min_size=pre.min_size, max_size=pre.max_size,
                     image_mean=list(pre.mean), image_std=list(pre.std), anchor_generator=anchors, head=head,
                     score_thresh=pre.score_threshold, detections_per_img=pre.max_detections)


if ARCH not in _BUILDERS:
    register_builder(ARCH)(tiny_retinanet)


def make_coco_set(folder: Path, names: list[str], ids: list[int], *, images: int = 12, seed: int = 0,
                  size: tuple[int, int] = (128, 96), portrait_every: int = 4) -> tuple[Path, Path]:
    """Draw ``images`` pictures with 1-3 shapes of the given categories; write ``ann.json`` (COCO format, category
    ``ids``) and ``images/``. Returns ``(json path, image folder)``."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    doc = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for i, n in zip(ids, names)]}
    for k in range(images):
        w, h = size if k % portrait_every else size[::-1]
        arr = np.full((h, w, 3), 120, np.uint8) + rng.integers(0, 20, (h, w, 3), dtype=np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            c = int(rng.integers(len(names)))
            colour, aspect = SHAPES[names[c]]
            bh = int(rng.integers(20, 40))
            bw = min(w - 2, max(8, int(bh * aspect)))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            arr[y:y + bh, x:x + bw] = colour
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": k + 1, "category_id": ids[c],
                                       "bbox": [x, y, bw, bh], "iscrowd": 0, "area": bw * bh})
        Image.fromarray(arr).save(folder / "images" / f"{k:04d}.png")
        doc["images"].append({"id": k + 1, "file_name": f"{k:04d}.png", "width": w, "height": h})
    path = folder / "ann.json"
    path.write_text(json.dumps(doc))
    return path, folder / "images"


def test_tiny_model_trains_and_predicts() -> None:
    model = tiny_retinanet(3)
    images = [torch.rand(3, 96, 128)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 40.0]]), "labels": torch.tensor([1])}]
    losses = model(images, targets)
    assert set(losses) == {"classification", "bbox_regression"}
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    out = model(images)[0]
    assert out["boxes"].shape[1] == 4 and (out["labels"] != 0).all()
