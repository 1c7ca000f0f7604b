"""Class-head transfer through a category mapping (the paper's backbone-and-head transfer, Table 12).

A state dict in our layout (torchvision names) is given a class head for a new category list: destination class ``j``
takes the rows of source class ``mapping[j]`` (``zoo.categories.map_indices``), the background row is kept, and
unmapped classes get rows initialised the way the builders initialise them. ``mode="reinit"`` reinitialises every
class-specific tensor (backbone-only transfer: backbone, FPN, RPN and the class-agnostic box head are kept).

Heads are found by their torchvision parameter names, so any architecture built on the same heads works:
- Faster R-CNN: ``roi_heads.box_predictor.cls_score`` [K, F] and ``bbox_pred`` [4K, F] (class-specific boxes);
- RetinaNet: ``head.classification_head.cls_logits`` [A*K, C, 3, 3], anchor-major (``a * K + k``); ``bbox_reg`` is
  class-agnostic and kept;
- PSPNet: ``classifier.5`` [K, C, 1, 1] and, when present, ``aux_classifier.4``;
- YOLOX: ``head.cls_preds.{0,1,2}`` [C, F, 1, 1] per level, without a background row (the zoo's class count still
  counts one, so the width reported here is C + 1); boxes and objectness are class-agnostic and kept.
Detectors always have background row 0; segmentation heads have one when ``src_background``/``dst_background`` say so.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.retinanet import RetinaNetClassificationHead

from ..models.pspnet import CLASSIFIER_KEYS, init_classifier_
from ..models.retinanet import set_background_rows_
from ..models.yolox import PRIOR_BIAS as YOLOX_PRIOR_BIAS

Mode = Literal["transfer", "reinit"]

_BOX_CLS = "roi_heads.box_predictor.cls_score"
_BOX_REG = "roi_heads.box_predictor.bbox_pred"
_ANCHOR_CLS = "head.classification_head.cls_logits"
_ANCHOR_REG = "head.regression_head.bbox_reg"
_YOLOX_CLS = "head.cls_preds"


@dataclass(frozen=True)
class _Head:
    kind: str  # "box_predictor" | "anchor" | "segmentation"
    width: int  # K: classifier rows per anchor, background included where there is one
    detector: bool


def _find_head(state_dict: Mapping[str, Tensor]) -> _Head | None:
    if f"{_BOX_CLS}.weight" in state_dict:
        return _Head("box_predictor", state_dict[f"{_BOX_CLS}.weight"].shape[0], True)
    if f"{_ANCHOR_CLS}.weight" in state_dict and f"{_ANCHOR_REG}.weight" in state_dict:
        anchors = state_dict[f"{_ANCHOR_REG}.weight"].shape[0] // 4
        return _Head("anchor", state_dict[f"{_ANCHOR_CLS}.weight"].shape[0] // anchors, True)
    if f"{_YOLOX_CLS}.0.weight" in state_dict:
        return _Head("yolox", state_dict[f"{_YOLOX_CLS}.0.weight"].shape[0] + 1, True)
    if f"{CLASSIFIER_KEYS[0]}.weight" in state_dict:
        return _Head("segmentation", state_dict[f"{CLASSIFIER_KEYS[0]}.weight"].shape[0], False)
    return None


def class_count(state_dict: Mapping[str, Tensor], arch: str) -> int | None:
    """Classifier width of a state dict in our layout (background included), or None if no known head is found."""
    head = _find_head(state_dict)
    return None if head is None else head.width


def check_num_classes(
    state_dict: Mapping[str, Tensor],
    arch: str,
    num_classes: int,
    *,
    categories: str | None = None,
    background: bool = True,
) -> None:
    """Raise a clear ValueError when the checkpoint's class head does not have ``num_classes`` rows (the builder's
    count: background included for detectors, and for segmentation when ``background``)."""
    head = _find_head(state_dict)
    if head is None:
        raise ValueError(f"no class head of a known layout in this {arch} state dict")
    if head.width == num_classes:
        return
    extra = 1 if head.detector or background else 0
    named = f" ({categories})" if categories else ""
    raise ValueError(
        f"checkpoint has {head.width - extra} classes, model expects {num_classes - extra}{named}: "
        f"the {arch} weights belong to another category list"
    )


def transfer_head(
    state_dict: Mapping[str, Tensor],
    arch: str,
    mapping: Sequence[int | None],
    *,
    mode: Mode = "transfer",
    seed: int = 0,
    src_background: bool = True,
    dst_background: bool = True,
) -> dict[str, Tensor]:
    """A copy of ``state_dict`` whose class head serves ``len(mapping)`` destination classes.

    ``mapping[j]``: the 0-based source class whose rows destination class ``j`` takes, or None for fresh rows (drawn
    from ``torch.manual_seed(seed)``, the global RNG state is left as it was). ``src_background``/``dst_background``
    apply to segmentation heads; detectors always keep background row 0.
    """
    if mode not in ("transfer", "reinit"):
        raise ValueError(f"mode must be 'transfer' or 'reinit', got {mode!r}")
    head = _find_head(state_dict)
    if head is None and arch == "hf_detr":
        from ..models.hf_detr import transfer_detr_head

        return transfer_detr_head(state_dict, mapping if mode == "transfer" else [None] * len(mapping), seed=seed)
    if head is None:
        raise ValueError(f"no class head of a known layout in this {arch} state dict")
    if head.detector and not (src_background and dst_background):
        raise ValueError(f"{arch}: detectors always carry background row 0")
    src_extra = 1 if src_background else 0
    dst_extra = 1 if dst_background else 0
    num_src = head.width - src_extra
    bad = [m for m in mapping if m is not None and not 0 <= m < num_src]
    if bad:
        raise ValueError(f"mapping refers to source class {bad[0]} but the {arch} checkpoint has {num_src} classes")

    rows: list[int | None] = [None] * (len(mapping) + dst_extra)
    if mode == "transfer":
        if dst_extra:
            rows[0] = 0 if src_extra else None
        for j, m in enumerate(mapping):
            rows[j + dst_extra] = None if m is None else m + src_extra
    width = len(rows)

    if head.kind == "yolox":  # the tensors have no background row: drop it and shift source rows down by one
        rows, width = [None if r is None else r - 1 for r in rows[1:]], width - 1
    out = dict(state_dict)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for key, fresh, groups, per_class in _fresh_head(state_dict, head, width):
            for suffix in ("weight", "bias"):
                name = f"{key}.{suffix}"
                out[name] = _select_rows(state_dict[name], getattr(fresh, suffix), rows, groups, per_class)
    return out


def _fresh_head(
    state_dict: Mapping[str, Tensor], head: _Head, width: int
) -> list[tuple[str, nn.Module, int, int]]:
    """(key, freshly initialised layer with ``width`` classes, anchor groups, rows per class) for each class layer."""
    if head.kind == "box_predictor":
        predictor = FastRCNNPredictor(state_dict[f"{_BOX_CLS}.weight"].shape[1], width)
        return [(_BOX_CLS, predictor.cls_score, 1, 1), (_BOX_REG, predictor.bbox_pred, 1, 4)]
    if head.kind == "anchor":
        anchors = state_dict[f"{_ANCHOR_REG}.weight"].shape[0] // 4
        cls_head = RetinaNetClassificationHead(state_dict[f"{_ANCHOR_CLS}.weight"].shape[1], anchors, width)
        set_background_rows_(cls_head.cls_logits, width)
        return [(_ANCHOR_CLS, cls_head.cls_logits, anchors, 1)]
    layers: list[tuple[str, nn.Module, int, int]] = []
    if head.kind == "yolox":
        level = 0
        while f"{_YOLOX_CLS}.{level}.weight" in state_dict:
            conv = nn.Conv2d(state_dict[f"{_YOLOX_CLS}.{level}.weight"].shape[1], width, 1)
            assert conv.bias is not None  # built with one
            nn.init.constant_(conv.bias, YOLOX_PRIOR_BIAS)
            layers.append((f"{_YOLOX_CLS}.{level}", conv, 1, 1))
            level += 1
        return layers
    for key in CLASSIFIER_KEYS:
        if f"{key}.weight" in state_dict:
            conv = init_classifier_(nn.Conv2d(state_dict[f"{key}.weight"].shape[1], width, 1))
            layers.append((key, conv, 1, 1))
    return layers


def _select_rows(src: Tensor, fresh: Tensor, rows: Sequence[int | None], groups: int, per_class: int) -> Tensor:
    """Rows laid out as ``[groups, classes, per_class, ...]``: destination class k takes source class ``rows[k]``."""
    tail = src.shape[1:]
    src_v = src.reshape(groups, -1, per_class, *tail)
    out = fresh.detach().to(src.dtype).reshape(groups, len(rows), per_class, *tail).clone()
    for k, r in enumerate(rows):
        if r is not None:
            out[:, k] = src_v[:, r]
    return out.reshape(groups * len(rows) * per_class, *tail)


# ResNet trunk parameters live under these prefixes: detectors wrap it in BackboneWithFPN (``backbone.body``), PSPNet in
# an IntermediateLayerGetter (``backbone``).
_RESNET_PREFIXES = ("backbone.body.", "backbone.")
_RESNET_ROOTS = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")


def resnet_trunk(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The ResNet trunk of a detector or segmenter state dict, keyed as in ``torchvision.models.resnet50``."""
    for prefix in _RESNET_PREFIXES:
        trunk = {k[len(prefix):]: v for k, v in state_dict.items()
                 if k.startswith(prefix) and k[len(prefix):].startswith(_RESNET_ROOTS)}
        if trunk:
            return trunk
    raise ValueError("no ResNet trunk (backbone.body.* or backbone.*) in this state dict")


def transfer_backbone(src: Mapping[str, Tensor], dst: nn.Module) -> int:
    """Copy the ResNet trunk of ``src`` into model ``dst`` across architectures (e.g. an Objects365 Faster R-CNN
    backbone into PSPNet, as the paper's segmentation experiments do). Every trunk parameter and running statistic of
    ``dst`` must be covered; returns the number of tensors copied."""
    trunk = resnet_trunk(src)
    target = resnet_trunk(dst.state_dict())
    prefix = next(p for p in _RESNET_PREFIXES if any(k.startswith(p + "conv1.") for k in dst.state_dict()))
    missing = [k for k in target if k not in trunk and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"source backbone lacks {len(missing)} trunk tensors, e.g. {missing[:3]}")
    shapes = [k for k in target if k in trunk and trunk[k].shape != target[k].shape]
    if shapes:
        raise ValueError(f"backbone shapes differ at {shapes[:3]}: not the same ResNet")
    copied = {prefix + k: trunk[k] for k in target if k in trunk}
    dst.load_state_dict(copied, strict=False)
    return len(copied)
