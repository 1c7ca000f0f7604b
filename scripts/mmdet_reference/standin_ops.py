"""A stand-in for mmcv's compiled extension ``mmcv._ext``, which mmcv-lite does not ship: the two ops that
MMDetection's Faster R-CNN and RetinaNet run at inference, NMS and RoIAlign, as torchvision's (``aligned`` and
``sampling_ratio`` passed through); any other op raises when called."""
from __future__ import annotations

import importlib.machinery
import sys
import types
from collections.abc import Callable

from torch import Tensor
from torchvision.ops import nms as tv_nms
from torchvision.ops import roi_align as tv_roi_align


def nms(bboxes: Tensor, scores: Tensor, iou_threshold: float, offset: int) -> Tensor:
    if offset != 0:
        raise NotImplementedError("the stand-in NMS has no +1 box offset")
    return tv_nms(bboxes, scores, iou_threshold)


def roi_align_forward(input: Tensor, rois: Tensor, output: Tensor, argmax_y: Tensor, argmax_x: Tensor, *,
                      aligned_height: int, aligned_width: int, spatial_scale: float, sampling_ratio: int,
                      pool_mode: int, aligned: bool) -> None:
    if pool_mode != 1:
        raise NotImplementedError("the stand-in RoIAlign averages only")
    output.copy_(tv_roi_align(input, rois, (aligned_height, aligned_width), spatial_scale, sampling_ratio, aligned))


def _missing(name: str) -> Callable:
    if name.startswith("__"):
        raise AttributeError(name)

    def op(*args, **kwargs):
        raise NotImplementedError(f"mmcv op {name} has no stand-in (mmcv-lite has no compiled ops)")

    return op


def install() -> None:
    """Register the stand-in as ``mmcv._ext`` (before anything imports ``mmcv.ops``)."""
    module = types.ModuleType("mmcv._ext")
    module.__spec__ = importlib.machinery.ModuleSpec("mmcv._ext", None)
    module.nms = nms
    module.roi_align_forward = roi_align_forward
    module.__getattr__ = _missing
    sys.modules["mmcv._ext"] = module
