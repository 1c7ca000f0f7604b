"""Export graph of the ``transformers`` DETR-family detectors (:mod:`zoo.models.hf_detr`).

These models are already fixed-size tensor programs at inference: no NMS, a fixed number of queries. The graph takes
``images [B, 3, H, W]`` on [0, 1] (the letterboxed canvas), resizes and normalises as the checkpoint's processor
(the model's own :meth:`~zoo.models.hf_detr.HfDetector.pixel_values`), ranks query x class pairs with the same
:func:`~zoo.models.hf_detr.select_detections` as the eager model, and masks scores at the threshold. Outputs follow
:mod:`export.contract`: ``boxes [B, D, 4]`` xyxy in input pixels, ``scores [B, D]``, ``labels [B, D]`` (1..C, 0 in
padding), ``num_detections [B]``, with ``D`` the model's ``max_detections`` (or queries x classes when fewer).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from zoo.models.hf_detr import HfDetector, select_detections


class DetrGraph(nn.Module):
    """A zoo DETR-family detector at the fixed input ``image_size = (H, W)``."""

    box_scale: Tensor

    def __init__(self, model: HfDetector, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        height, width = image_size
        self.register_buffer("box_scale", torch.tensor([width, height, width, height], dtype=torch.float32),
                             persistent=False)
        self.score_thresh = float(model.score_thresh)
        self.detections = int(model.detections_per_img)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        logits, boxes = self.model.raw_outputs(images)
        scores, labels, xyxy = select_detections(logits, boxes, self.detections)
        valid = scores > self.score_thresh  # scores are sorted: the valid ones come first
        boxes_px = torch.where(valid.unsqueeze(-1), xyxy * self.box_scale, torch.zeros_like(xyxy))
        return (boxes_px, torch.where(valid, scores, torch.zeros_like(scores)),
                torch.where(valid, labels, torch.zeros_like(labels)), valid.sum(dim=1))
