"""YOLOX's training losses (Ge et al. 2021, sections 2.1-2.2), written from the paper's description.

- **SimOTA assignment** per image: candidate anchors are those whose centre lies within ``CENTER_RADIUS`` strides of
  a ground-truth centre; the cost of pairing ground truth ``g`` with prediction ``a`` is the class cost
  (binary cross-entropy of ``sqrt(class x objectness)`` against the one-hot class) plus ``IOU_COST_WEIGHT`` x
  ``-log IoU``; each ground truth takes its ``k`` cheapest candidates, ``k`` = the sum of its 10 best IoUs (at
  least 1); a prediction claimed twice goes to its cheapest ground truth.
- **Losses**, each summed and divided by the number of positives: IoU loss ``1 - IoU^2`` on positive boxes (weight
  ``REG_WEIGHT``), BCE on objectness for every prediction (target: positive or not), BCE on class logits of the
  positives with the one-hot class scaled by the matched IoU as target.
The reference adds an L1 box loss for the last 15 epochs without augmentation; short finetunes leave it out.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou

CENTER_RADIUS = 1.5  # strides
IOU_COST_WEIGHT = 3.0
REG_WEIGHT = 5.0
TOP_IOUS = 10  # ground truths take k = sum of their best TOP_IOUS IoUs candidates
OUTSIDE_COST = 1e6  # pairs outside the centre region are never chosen while another is available


def _matched_iou(pred: Tensor, target: Tensor) -> Tensor:
    """Element-wise IoU of xyxy boxes ``[N, 4]`` (differentiable)."""
    tl = torch.max(pred[:, :2], target[:, :2])
    br = torch.min(pred[:, 2:], target[:, 2:])
    inter = (br - tl).clamp(min=0).prod(dim=1)
    area_p = (pred[:, 2:] - pred[:, :2]).prod(dim=1)
    area_t = (target[:, 2:] - target[:, :2]).prod(dim=1)
    return inter / (area_p + area_t - inter + 1e-16)


@torch.no_grad()
def simota_assign(boxes: Tensor, cls_logits: Tensor, obj_logits: Tensor, centres: Tensor, strides: Tensor, *,
                  gt_boxes: Tensor, gt_classes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One image: ``(foreground mask [A], matched ground truth [F], IoU with it [F])``.

    ``boxes [A, 4]`` xyxy predictions, ``cls_logits [A, K]``, ``obj_logits [A]``, ``centres [A, 2]`` anchor-point
    centres and ``strides [A]`` in pixels, ``gt_boxes [G, 4]`` xyxy, ``gt_classes [G]`` in ``0..K-1``."""
    num_anchors = boxes.shape[0]
    gt_centres = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    radius = CENTER_RADIUS * strides[None, :]
    near = ((centres[None, :, 0] - gt_centres[:, None, 0]).abs() < radius) & (
        (centres[None, :, 1] - gt_centres[:, None, 1]).abs() < radius)  # [G, A]
    candidates = near.any(dim=0)
    fg = torch.zeros(num_anchors, dtype=torch.bool, device=boxes.device)
    if not candidates.any():
        return fg, gt_classes.new_zeros(0), boxes.new_zeros(0)
    ious = box_iou(gt_boxes, boxes[candidates])  # [G, C]
    probs = (torch.sigmoid(cls_logits[candidates].float()) * torch.sigmoid(obj_logits[candidates].float())[:, None])
    probs = probs.sqrt()
    onehot = F.one_hot(gt_classes, cls_logits.shape[1]).float()
    cls_cost = F.binary_cross_entropy(probs[None].expand(len(gt_boxes), -1, -1),
                                      onehot[:, None].expand(-1, probs.shape[0], -1), reduction="none").sum(-1)
    cost = cls_cost + IOU_COST_WEIGHT * -torch.log(ious + 1e-8) + OUTSIDE_COST * (~near[:, candidates]).float()

    k = min(TOP_IOUS, ious.shape[1])
    dynamic_k = ious.topk(k, dim=1).values.sum(dim=1).int().clamp(min=1)
    matching = torch.zeros_like(cost, dtype=torch.bool)
    for g in range(len(gt_boxes)):
        matching[g, cost[g].topk(int(dynamic_k[g]), largest=False).indices] = True
    claimed = matching.sum(dim=0) > 1
    if claimed.any():
        matching[:, claimed] = False
        matching[cost[:, claimed].argmin(dim=0), claimed.nonzero()[:, 0]] = True
    positive = matching.any(dim=0)
    fg[candidates] = positive
    matched = matching[:, positive].float().argmax(dim=0)
    matched_ious = ious[:, positive].gather(0, matched[None])[0]
    return fg, matched, matched_ious


def yolox_losses(raw: Tensor, grid: Tensor, strides: Tensor, targets: Sequence[dict[str, Tensor]]
                 ) -> dict[str, Tensor]:
    """Losses of raw head outputs ``[B, A, 5 + K]`` for ``targets`` (``boxes`` xyxy in input pixels, ``labels`` in
    ``1..K``); ``grid [A, 2]`` and ``strides [A, 1]`` as :func:`zoo.models.yolox.grid_and_strides`."""
    num_classes = raw.shape[-1] - 5
    centre_xy = (raw[..., :2] + grid) * strides
    size = torch.exp(raw[..., 2:4].clamp(max=10.0)) * strides
    boxes = torch.cat([centre_xy - size / 2, centre_xy + size / 2], dim=-1)
    obj_logits, cls_logits = raw[..., 4], raw[..., 5:]
    anchor_centres = (grid + 0.5) * strides
    stride_px = strides[:, 0]

    fg_masks, box_targets, cls_targets = [], [], []
    for b, target in enumerate(targets):
        gt_boxes = target["boxes"].to(boxes.dtype)
        gt_classes = target["labels"].long() - 1
        if gt_boxes.numel() == 0:
            fg_masks.append(torch.zeros(raw.shape[1], dtype=torch.bool, device=raw.device))
            continue
        if (gt_classes < 0).any() or (gt_classes >= num_classes).any():
            raise ValueError(f"target labels must be in 1..{num_classes}, got {target['labels'].tolist()}")
        fg, matched, matched_ious = simota_assign(boxes[b].detach(), cls_logits[b].detach(), obj_logits[b].detach(),
                                                  anchor_centres, stride_px, gt_boxes=gt_boxes,
                                                  gt_classes=gt_classes)
        fg_masks.append(fg)
        box_targets.append(gt_boxes[matched])
        cls_targets.append(F.one_hot(gt_classes[matched], num_classes).to(raw.dtype) * matched_ious[:, None])
    fg_mask = torch.stack(fg_masks)
    num_fg = max(int(fg_mask.sum()), 1)
    obj_loss = F.binary_cross_entropy_with_logits(obj_logits, fg_mask.to(raw.dtype), reduction="sum") / num_fg
    if box_targets:
        box_target = torch.cat(box_targets)
        cls_target = torch.cat(cls_targets)
        iou_loss = (1 - _matched_iou(boxes[fg_mask], box_target) ** 2).sum() / num_fg
        cls_loss = F.binary_cross_entropy_with_logits(cls_logits[fg_mask], cls_target, reduction="sum") / num_fg
    else:  # no objects in the batch: only objectness learns (keep the graph connected for DDP)
        iou_loss = cls_loss = raw[..., :4].sum() * 0.0
    return {"loss_iou": REG_WEIGHT * iou_loss, "loss_obj": obj_loss, "loss_cls": cls_loss}

