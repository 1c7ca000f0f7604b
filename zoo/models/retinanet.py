"""RetinaNet R50-FPN on torchvision, with an MMDetection-compatible numeric mode.

Labels follow the detector convention: ``num_classes`` = C + 1 and row 0 of each anchor's class logits is an unused
background class, held at weight 0 and bias -10 (sigmoid 4.5e-5, below any score threshold), as torchvision's own
COCO RetinaNet carries "__background__".

``compat="mmdet"`` reproduces MMDetection's RetinaNet R50-FPN (configs/_base_/models/retinanet_r50_fpn.py, FPN with
``add_extra_convs='on_input'``): P6 is a stride-2 conv on C5 (2048 channels in) and P7 a conv on P6 with no ReLU in
between (torchvision: P6 from P5 and ReLU before P7); anchor sizes are ``4 * 2**(k/3) * stride`` unrounded at the
nominal strides (torchvision truncates them to 32, 40, 50, ..., rounds the base anchors and derives strides 61 and
114 for P6 and P7 at an 800 px side); boxes of zero width or height after clipping are dropped before NMS
(``min_bbox_size=0``; torchvision keeps them); images are prepared as MMDetection does (see
:class:`~zoo.models.faster_rcnn.MMDetTransform`). Test settings are MMDetection's in both modes: 1000 top candidates
per level above score 0.05, class-wise NMS 0.5, 100 detections (torchvision's default keeps 300).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import boxes as box_ops
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelP6P7

from ..preprocess import DETECTION_800, Preprocessing
from . import register_builder
from .faster_rcnn import Compat, UnroundedAnchorGenerator, check_compat, resnet50_body, use_mmdet_transform

BACKGROUND_BIAS = -10.0
STRIDES = (8, 16, 32, 64, 128)
RATIOS = (0.5, 1.0, 2.0)


class MMDetP6P7(ExtraFPNBlock):
    """P6 = conv3x3/2 on C5, P7 = conv3x3/2 on P6 without ReLU (MMDetection FPN ``add_extra_convs='on_input'``,
    ``relu_before_extra_convs=False``)."""

    def __init__(self, in_channels: int = 2048, out_channels: int = 256) -> None:
        super().__init__()
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for conv in (self.p6, self.p7):  # torchvision's LastLevelP6P7 initialisation
            nn.init.kaiming_uniform_(conv.weight, a=1)
            assert conv.bias is not None  # built with one
            nn.init.constant_(conv.bias, 0)

    def forward(self, p: list[Tensor], c: list[Tensor], names: list[str]) -> tuple[list[Tensor], list[str]]:
        p6 = self.p6(c[-1])
        p7 = self.p7(p6)
        return p + [p6, p7], names + ["p6", "p7"]


def anchor_generator(compat: Compat) -> AnchorGenerator:
    """Three octave scales and three ratios per level, ratio-major (both libraries' order)."""
    if compat == "mmdet":
        sizes = tuple(tuple(4 * 2 ** (k / 3) * s for k in range(3)) for s in STRIDES)
        return UnroundedAnchorGenerator(sizes, (RATIOS,) * len(sizes), STRIDES)
    sizes = tuple((4 * s, int(4 * s * 2 ** (1 / 3)), int(4 * s * 2 ** (2 / 3))) for s in STRIDES)
    return AnchorGenerator(sizes, (RATIOS,) * len(sizes))


class MMDetRetinaNet(RetinaNet):
    """torchvision's ``RetinaNet`` with MMDetection's post-processing (``BaseDenseHead``): per level the top
    ``topk_candidates`` scores above ``score_thresh``, decoded and clipped; boxes of zero width or height dropped
    (``min_bbox_size=0``); class-wise NMS; the top ``detections_per_img``."""

    def postprocess_detections(self, head_outputs: dict[str, list[Tensor]], anchors: list[list[Tensor]],
                               image_shapes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        detections: list[dict[str, Tensor]] = []
        for index, image_shape in enumerate(image_shapes):
            boxes_l, scores_l, labels_l = [], [], []
            for regression, logits, level_anchors in zip(head_outputs["bbox_regression"], head_outputs["cls_logits"],
                                                         anchors[index]):
                num_classes = logits.shape[-1]
                scores = torch.sigmoid(logits[index]).flatten()
                candidates = torch.where(scores > self.score_thresh)[0]
                scores, order = scores[candidates].topk(min(self.topk_candidates, candidates.numel()))
                candidates = candidates[order]
                anchor_idx = torch.div(candidates, num_classes, rounding_mode="floor")
                boxes = self.box_coder.decode_single(regression[index][anchor_idx], level_anchors[anchor_idx])
                boxes_l.append(box_ops.clip_boxes_to_image(boxes, image_shape))
                scores_l.append(scores)
                labels_l.append(candidates % num_classes)
            boxes, scores, labels = torch.cat(boxes_l), torch.cat(scores_l), torch.cat(labels_l)
            sized = torch.where((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))[0]
            keep = sized[box_ops.batched_nms(boxes[sized], scores[sized], labels[sized], self.nms_thresh)]
            keep = keep[: self.detections_per_img]
            detections.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return detections


@torch.no_grad()
def set_background_rows_(cls_logits: nn.Conv2d, num_classes: int) -> None:
    """Hold class 0 of every anchor at weight 0, bias -10 (channels are anchor-major: ``a * num_classes + k``)."""
    rows = torch.arange(0, cls_logits.out_channels, num_classes)
    assert cls_logits.bias is not None  # RetinaNet's classifier has one
    cls_logits.weight[rows] = 0.0
    cls_logits.bias[rows] = BACKGROUND_BIAS


@register_builder("retinanet_r50_fpn")
def retinanet_r50_fpn(
    num_classes: int,
    *,
    compat: Compat = "torchvision",
    preprocessing: Preprocessing | None = None,
    pretrained_backbone: str | Path | None = None,
    trainable_backbone_layers: int = 3,
    norm: str = "frozen",
    **kwargs: Any,
) -> RetinaNet:
    """torchvision ``RetinaNet`` on ResNet-50-FPN (P3-P7) with ``num_classes`` = C + 1 (row 0 unused background).

    Backbone BatchNorm is frozen (``norm="bn"``: trainable, for SyncBN pretraining). ``pretrained_backbone``: a
    local ImageNet ResNet-50 file (never downloaded).
    ``kwargs`` go to ``RetinaNet`` and override the values derived from ``preprocessing``.
    """
    check_compat(compat)
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background row: need at least 2, got {num_classes}")
    pre = preprocessing or DETECTION_800
    extra = MMDetP6P7(2048, 256) if compat == "mmdet" else LastLevelP6P7(256, 256)
    # torchvision's private ``_resnet_fpn_extractor`` wraps a ResNet we built (BatchNorm choice, our ImageNet file)
    # in its FPN with the layer freezing of ``trainable_layers``; the public resnet_fpn_backbone builds its own ResNet.
    # tests/test_torchvision_internals.py checks its outputs and freezing.
    backbone = _resnet_fpn_extractor(resnet50_body(pretrained_backbone, norm=norm), trainable_backbone_layers,
                                     returned_layers=[2, 3, 4], extra_blocks=extra)
    options: dict[str, Any] = {
        **pre.transform_kwargs(),
        "score_thresh": pre.score_threshold,
        "nms_thresh": pre.nms_threshold,
        "detections_per_img": pre.max_detections,
        "topk_candidates": 1000,
        "anchor_generator": anchor_generator(compat),
    }
    options.update(kwargs)
    model = (MMDetRetinaNet if compat == "mmdet" else RetinaNet)(backbone, num_classes=num_classes, **options)
    if compat == "mmdet":
        use_mmdet_transform(model)
    set_background_rows_(model.head.classification_head.cls_logits, num_classes)
    return model
