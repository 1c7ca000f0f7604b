"""Small in-memory zoo models for the export tests (random weights, VOC head, small input)."""
from __future__ import annotations

import dataclasses

import torch

import zoo
from zoo.categories import get_categories
from zoo.models import build
from zoo.vocabulary import DETECTION

# Registry names whose architecture and conventions the tests export (weights: random; see tiny_model).
MODELS = {"fasterrcnn": "fpn_r50_obj365_voc", "retinanet": "retinanet_r50_obj365_coco",
          "pspnet": "pspnet_r50_obj365_voc"}


def tiny_model(kind: str, size: int = 256, categories: str = "voc") -> torch.nn.Module:
    """The registry model's architecture at ``size`` px (no internal resize) with a ``categories`` head and random
    weights. Random detectors score everything low, so the score threshold is lowered to 0.001 to leave
    detections to compare."""
    torch.manual_seed(0)
    spec = zoo.get_spec(MODELS[kind])
    pre = dataclasses.replace(spec.preprocessing, min_size=size, max_size=size)
    if spec.task == DETECTION:
        pre = dataclasses.replace(pre, score_threshold=0.001)
    spec = dataclasses.replace(spec, preprocessing=pre, categories=categories)
    names = get_categories(categories)
    model = build(spec.arch, spec.num_outputs, preprocessing=pre, **spec.build_kwargs).eval()
    return zoo.describe(model, spec, names)
