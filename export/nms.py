"""Batched, class-aware non-maximum suppression with the semantics of ONNX ``NonMaxSuppression``.

``multiclass_nms(boxes [G, N, 4], scores [G, C, N], iou)`` returns the kept ``(group, class, box)`` index triples
``[S, 3]``; entries with a negative score are ignored (callers mask what their threshold drops with ``-1``). The
eager/TorchScript implementation loops over groups with torchvision's NMS; under ``torch.onnx.export`` the same call
becomes one ``NonMaxSuppression`` node, so the exported graph keeps a dynamic batch and never compares boxes of
different classes through a coordinate offset (which loses float32 precision with hundreds of classes).
"""

import torch
from torch import Tensor
from torchvision.ops import batched_nms

IGNORED: float = -1.0
"""Score of a candidate that must not be kept (below the threshold, padding, another class or level); the
scriptable helpers below spell it as the literal -1.0 (TorchScript does not capture float globals)."""


def mask_scores(scores: Tensor, keep: Tensor) -> Tensor:
    """``scores`` where ``keep``, else the ignored score -1."""
    return torch.where(keep, scores, torch.full_like(scores, -1.0))


def is_candidate(scores: Tensor) -> Tensor:
    return scores > -0.5


def multiclass_nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Kept ``[S, 3]`` int64 ``(group, class, box)`` triples; see the module docstring."""
    kept: list[Tensor] = []
    for g in range(boxes.shape[0]):
        candidates = torch.where(is_candidate(scores[g]))
        cls, idx = candidates[0], candidates[1]
        if cls.numel() == 0:
            continue
        keep = batched_nms(boxes[g][idx], scores[g][cls, idx], cls, iou_threshold)
        kept.append(torch.stack([torch.full_like(keep, g), cls[keep], idx[keep]], dim=1))
    if len(kept) == 0:
        return torch.zeros((0, 3), dtype=torch.int64, device=boxes.device)
    return torch.cat(kept, dim=0)


class OnnxMulticlassNms(torch.autograd.Function):
    """:func:`multiclass_nms` that exports as ONNX ``NonMaxSuppression`` (TorchScript-based exporter)."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:  # noqa: ARG004
        return multiclass_nms(boxes, scores, iou_threshold)

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold: float):
        # no cap on kept boxes per class (ONNX's default of 0 would keep none)
        max_out = g.op("Constant", value_t=torch.tensor([2**31 - 1], dtype=torch.int64))
        iou = g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float32))
        min_score = g.op("Constant", value_t=torch.tensor([IGNORED / 2], dtype=torch.float32))
        return g.op("NonMaxSuppression", boxes, scores, max_out, iou, min_score)


def keep_mask(selected: Tensor, shape: list[int]) -> Tensor:
    """Bool tensor of ``shape`` ``[G, C, N]`` that is True at the kept triples of :func:`multiclass_nms`."""
    mask = torch.zeros(shape, dtype=torch.bool, device=selected.device)
    ones = torch.ones(selected.shape[0], dtype=torch.bool, device=selected.device)
    return mask.index_put((selected[:, 0], selected[:, 1], selected[:, 2]), ones)
