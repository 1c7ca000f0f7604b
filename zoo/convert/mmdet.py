"""MMDetection (2.x/3.x) Faster R-CNN and RetinaNet R50-FPN state dicts -> our torchvision layout.

Key names follow MMDetection's modules: ``ResNet`` (conv1/bn1/layerN.i.{conv,bn}{1,2,3}, downsample.{0,1}),
``FPN`` (``lateral_convs.i.conv``, ``fpn_convs.i.conv`` through mmcv ``ConvModule``), ``RPNHead`` (rpn_conv,
rpn_cls, rpn_reg), ``Shared2FCBBoxHead`` (shared_fcs.{0,1}, fc_cls [C+1] with background last, fc_reg [4C]) and
``RetinaHead`` (cls_convs.i.conv, reg_convs.i.conv, retina_cls [A*C], retina_reg [A*4]).

Class layout: Faster R-CNN's background row moves from last to 0 and four zero rows are prepended to the
class-specific regression (4C -> 4(C+1)); RetinaNet gains an unused class 0 per anchor (weight 0, bias -10).
MMDetection source class ``i`` becomes our label ``i + 1``. ``num_batches_tracked`` is dropped (FrozenBatchNorm2d).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..checkpoint import load_foreign
from ..models.retinanet import BACKGROUND_BIAS

_BACKBONE = [
    (r"backbone\.(conv1|bn1|layer[1-4])\.", r"backbone.body.\1."),
    (r"neck\.lateral_convs\.(\d+)\.conv\.", r"backbone.fpn.inner_blocks.\1.0."),
]
_FASTER_RCNN = _BACKBONE + [
    (r"neck\.fpn_convs\.([0-3])\.conv\.", r"backbone.fpn.layer_blocks.\1.0."),
    (r"rpn_head\.rpn_conv\.", "rpn.head.conv.0.0."),
    (r"rpn_head\.rpn_cls\.", "rpn.head.cls_logits."),
    (r"rpn_head\.rpn_reg\.", "rpn.head.bbox_pred."),
    (r"roi_head\.bbox_head\.shared_fcs\.0\.", "roi_heads.box_head.fc6."),
    (r"roi_head\.bbox_head\.shared_fcs\.1\.", "roi_heads.box_head.fc7."),
    (r"roi_head\.bbox_head\.fc_cls\.", "roi_heads.box_predictor.cls_score."),
    (r"roi_head\.bbox_head\.fc_reg\.", "roi_heads.box_predictor.bbox_pred."),
]
_RETINANET = _BACKBONE + [
    (r"neck\.fpn_convs\.([0-2])\.conv\.", r"backbone.fpn.layer_blocks.\1.0."),
    (r"neck\.fpn_convs\.3\.conv\.", "backbone.fpn.extra_blocks.p6."),
    (r"neck\.fpn_convs\.4\.conv\.", "backbone.fpn.extra_blocks.p7."),
    (r"bbox_head\.cls_convs\.(\d+)\.conv\.", r"head.classification_head.conv.\1.0."),
    (r"bbox_head\.reg_convs\.(\d+)\.conv\.", r"head.regression_head.conv.\1.0."),
    (r"bbox_head\.retina_cls\.", "head.classification_head.cls_logits."),
    (r"bbox_head\.retina_reg\.", "head.regression_head.bbox_reg."),
]


def load_mmdet_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read an MMDetection ``.pth`` (``{"meta", "state_dict"}``, or a bare state dict) with ``weights_only=True``.

    Returns ``(state_dict, meta)``; a pickle that needs arbitrary Python objects raises
    :class:`zoo.checkpoint.UnsafeCheckpointError`.
    """
    data = load_foreign(path)
    if not isinstance(data, dict):
        raise TypeError(f"{path}: expected a dict checkpoint, found {type(data).__name__}")
    if "state_dict" in data:
        state_dict, meta = data["state_dict"], data.get("meta") or {}
    else:
        state_dict, meta = data, {}
    if not isinstance(state_dict, dict) or not all(isinstance(v, Tensor) for v in state_dict.values()):
        raise ValueError(f"{path}: 'state_dict' is not a mapping of names to tensors")
    return dict(state_dict), dict(meta) if isinstance(meta, dict) else {}


def mmdet_classes(meta: Mapping[str, Any] | None) -> list[str] | None:
    """The class list MMDetection stores in a checkpoint: meta['CLASSES'] (2.x) or meta['dataset_meta']['classes']
    (3.x); None when absent."""
    if not isinstance(meta, dict):
        return None
    classes = meta.get("CLASSES") or (meta.get("dataset_meta") or {}).get("classes")
    return list(classes) if classes else None


def convert_mmdet_faster_rcnn(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """MMDetection Faster R-CNN R50-FPN (Shared2FCBBoxHead, class-specific regression) -> ``fasterrcnn_r50_fpn``."""
    out = _rename(state_dict, _FASTER_RCNN, "Faster R-CNN R50-FPN")
    cls_w, cls_b = _required(out, "roi_heads.box_predictor.cls_score", "Faster R-CNN R50-FPN")
    reg_w, reg_b = _required(out, "roi_heads.box_predictor.bbox_pred", "Faster R-CNN R50-FPN")
    num_classes = cls_w.shape[0] - 1
    if reg_w.shape[0] != 4 * num_classes:
        raise ValueError(
            f"fc_reg has {reg_w.shape[0]} rows, expected 4 x {num_classes} classes (class-specific regression); "
            f"class-agnostic or other box heads are not supported"
        )
    out["roi_heads.box_predictor.cls_score.weight"] = torch.cat([cls_w[-1:], cls_w[:-1]])
    out["roi_heads.box_predictor.cls_score.bias"] = torch.cat([cls_b[-1:], cls_b[:-1]])
    out["roi_heads.box_predictor.bbox_pred.weight"] = torch.cat([reg_w.new_zeros((4, *reg_w.shape[1:])), reg_w])
    out["roi_heads.box_predictor.bbox_pred.bias"] = torch.cat([reg_b.new_zeros(4), reg_b])
    return out


def convert_mmdet_retinanet(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """MMDetection RetinaNet R50-FPN (``add_extra_convs='on_input'``) -> ``retinanet_r50_fpn(compat="mmdet")``."""
    out = _rename(state_dict, _RETINANET, "RetinaNet R50-FPN")
    cls_w, cls_b = _required(out, "head.classification_head.cls_logits", "RetinaNet R50-FPN")
    reg_w, _ = _required(out, "head.regression_head.bbox_reg", "RetinaNet R50-FPN")
    anchors = reg_w.shape[0] // 4
    if cls_w.shape[0] % anchors:
        raise ValueError(f"retina_cls has {cls_w.shape[0]} rows, not a multiple of {anchors} anchors")
    grouped_w = cls_w.reshape(anchors, -1, *cls_w.shape[1:])
    grouped_b = cls_b.reshape(anchors, -1)
    background_w = grouped_w.new_zeros((anchors, 1, *cls_w.shape[1:]))
    background_b = grouped_b.new_full((anchors, 1), BACKGROUND_BIAS)
    out["head.classification_head.cls_logits.weight"] = torch.cat([background_w, grouped_w], 1).flatten(0, 1)
    out["head.classification_head.cls_logits.bias"] = torch.cat([background_b, grouped_b], 1).flatten()
    return out


def _rename(state_dict: Mapping[str, Tensor], rules: list[tuple[str, str]], what: str) -> dict[str, Tensor]:
    compiled = [(re.compile(pattern), repl) for pattern, repl in rules]
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        for pattern, repl in compiled:
            if pattern.match(key):
                out[pattern.sub(repl, key, count=1)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"not an MMDetection {what} state dict: {len(unknown)} keys have no place in it, e.g. {unknown[:3]}"
        )
    return out


def _required(state_dict: Mapping[str, Tensor], prefix: str, what: str) -> tuple[Tensor, Tensor]:
    try:
        return state_dict[f"{prefix}.weight"], state_dict[f"{prefix}.bias"]
    except KeyError:
        raise ValueError(f"not an MMDetection {what} state dict: no weights for {prefix}") from None
