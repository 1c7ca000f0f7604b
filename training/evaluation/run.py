"""A zoo model on a dataset under one metric: what ``python -m training eval --metric ...`` runs.

- ``coco``: a COCO-format JSON and its image folder; categories matched by name, those the model lacks left out.
- ``voc`` / ``voc07``: a ``VOCdevkit/VOC20xx`` folder (split ``test``), VOC2010+ area or VOC2007 11-point AP.
  Detections (continuous pixel coordinates) are written in VOC's 1-based inclusive pixels as detectron2 does
  (``xmin + 1``, ``ymin + 1``); classes the model lacks are left out.
- ``citypersons``: ``gtBboxCityPersons`` and ``leftImg8bit`` folders (split ``val``); the model's "person"
  detections scored with the four official setups.
- ``miou``: a VOC2012 folder (``ImageSets/Segmentation``, split ``val``) or ADE20K (split ``validation``), whole
  images at their own size.

Every metric gives a flat dict of values (fractions; -1 or NaN where undefined) for :func:`format_report`.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zoo import model_categories

if TYPE_CHECKING:
    import torch
    from torch import nn

METRICS = ("coco", "voc", "voc07", "citypersons", "miou")
_TITLES = {
    "coco": "COCO box AP (%)",
    "voc": "VOC AP, area under the precision envelope (%)",
    "voc07": "VOC2007 11-point AP (%)",
    "citypersons": "CityPersons log-average miss rate MR^-2 (%, lower is better)",
    "miou": "semantic segmentation (%)",
}


def evaluate_on(model: nn.Module, metric: str, ann: str | Path, images: str | Path | None = None, *,
                split: str | None = None, device: str = "cpu", batch_size: int = 2) -> dict[str, float]:
    """``metric`` of ``model`` (a :func:`zoo.load` model) on the dataset at ``ann`` (and ``images``)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
    if metric in ("coco", "citypersons"):
        if images is None:
            raise ValueError(f"the {metric} metric needs an image folder")
        model.eval().to(device)
        if metric == "coco":
            return _coco(model, ann, images, device, batch_size)
        return _citypersons(model, Path(ann), Path(images), split or "val", device, batch_size)
    model.eval().to(device)
    if metric in ("voc", "voc07"):
        return _voc(model, Path(ann), split or "test", metric == "voc07", device, batch_size)
    return _miou(model, Path(ann), split, device)


def format_report(metric: str, values: Mapping[str, float]) -> str:
    """A title line, then one aligned line per value in percent ("-" where undefined); CityPersons setups with
    their ranges."""
    from .citypersons import SETUPS

    ranges = {f"MR/{s.name}": f"  height [{s.height[0]:g}, {s.height[1]:g}], visibility [{s.visibility[0]:g}, "
                              f"{s.visibility[1]:g}]" for s in SETUPS}
    width = max(map(len, values), default=0)
    lines = [_TITLES[metric]]
    for key, v in values.items():
        cell = "-" if math.isnan(v) or v < 0 else f"{100 * v:.2f}"
        lines.append(f"  {key:<{width}}  {cell:>6}{ranges.get(key, '')}")
    return "\n".join(lines)


def _detect(model: nn.Module, images: Iterable[torch.Tensor], device: str, batch_size: int
            ) -> Iterator[dict[str, np.ndarray]]:
    """The model's outputs (boxes, scores, labels as arrays) image by image."""
    import torch

    images = iter(images)
    while batch := list(itertools.islice(images, batch_size)):
        with torch.no_grad():
            outputs = model([im.to(device) for im in batch])
        for out in outputs:
            yield {k: out[k].cpu().numpy() for k in ("boxes", "scores", "labels")}


def _coco(model: nn.Module, ann: str | Path, images: str | Path, device: str, batch_size: int) -> dict[str, float]:
    from ..data import CocoDetection
    from ..engine import predict_coco
    from .coco import evaluate_coco

    dataset = CocoDetection(ann, images, categories=list(model_categories(model)), on_unknown="skip",
                            skip_empty=False)
    detections = predict_coco(model, dataset, device, batch_size)
    # CocoDetection._label_of (private to the data module; checked by tests/test_training_data.py): the label of
    # each annotation-file category, 0 or -1 where the model has none.
    known = sorted({int(dataset.index.category_ids[p]) for p, label in enumerate(dataset._label_of.tolist())
                    if label > 0})
    return evaluate_coco(ann, detections, categories=known).stats


def _voc(model: nn.Module, root: Path, split: str, use_07_metric: bool, device: str,
         batch_size: int) -> dict[str, float]:
    from ..data import VocDetection
    from .voc import evaluate_voc

    names = model_categories(model)
    dataset = VocDetection(root, split, categories=list(names), on_unknown="skip")
    gt = []
    for item in dataset.items:
        # VocDetection._label (private to the data module): class name -> model label, 0 or -1 for classes the
        # model lacks; tests/test_evaluation_cli.py's VOC runs fail if it changes.
        labels = np.array([dataset._label[n] for n in item.names], dtype=np.int64)
        keep = labels > 0
        gt.append({"boxes": item.boxes.numpy()[keep], "labels": labels[keep],
                   "difficult": np.array(item.difficult, dtype=bool)[keep]})
    detections = [dict(out, boxes=out["boxes"] + np.array([1.0, 1.0, 0.0, 0.0]))
                  for out in _detect(model, (dataset[i][0] for i in range(len(dataset))), device, batch_size)]
    result = evaluate_voc(gt, detections, use_07_metric=use_07_metric)
    return {"mAP": result.map, **{f"AP/{names[label - 1]}": ap for label, ap in result.ap.items()}}


def _citypersons(model: nn.Module, ann_root: Path, image_root: Path, split: str, device: str,
                 batch_size: int) -> dict[str, float]:
    from ..data.coco import read_image, resolve_labels
    from .citypersons import evaluate_citypersons, read_ground_truth

    files = sorted((ann_root / split).glob("*/*_gtBboxCityPersons.json"))
    if not files:
        raise FileNotFoundError(f"no *_gtBboxCityPersons.json under {ann_root / split}")
    paths = [image_root / split / f.parent.name / f"{f.name[:-len('_gtBboxCityPersons.json')]}_leftImg8bit.png"
             for f in files]
    person = int(resolve_labels(["person"], list(model_categories(model)), "error", "citypersons")[1][0])
    detections = [{"boxes": out["boxes"][out["labels"] == person], "scores": out["scores"][out["labels"] == person]}
                  for out in _detect(model, map(read_image, paths), device, batch_size)]
    results = evaluate_citypersons([read_ground_truth(f) for f in files], detections)
    return {f"MR/{name}": r.mr for name, r in results.items()}


def _miou(model: nn.Module, root: Path, split: str | None, device: str) -> dict[str, float]:
    import torch

    from ..data import ade20k, voc_segmentation
    from .segmentation import ConfusionMatrix

    voc = (root / "ImageSets" / "Segmentation").is_dir()
    dataset = voc_segmentation(root, split or "val") if voc else ade20k(root, split or "validation")
    names = model_categories(model)
    if len(names) == dataset.num_classes - 1:
        names = ("background", *names)
    if len(names) != dataset.num_classes:
        raise ValueError(f"the model has {len(names)} classes but the dataset {dataset.num_classes}")
    matrix = ConfusionMatrix(dataset.num_classes, class_names=names)
    for i in range(len(dataset)):
        image, target = dataset[i]
        with torch.no_grad():
            logits = model(image[None].to(device))["out"]
        matrix.update(logits.cpu(), target["mask"][None])
    return matrix.summary()
