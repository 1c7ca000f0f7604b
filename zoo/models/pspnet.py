"""PSPNet (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017) on a dilated torchvision ResNet-50.

Input: a batch ``[B, 3, H, W]`` of RGB floats on [0, 1], like the detectors; the model normalises inside ``forward``
with the preprocessing mean/std (and does not resize: callers choose the input size, e.g. 512x512).
Output: ``{"out": logits [B, K, H, W]}`` at input resolution, plus ``"aux"`` (from layer3) when built with
``aux=True``. The final classifier convs are ``classifier.5`` and ``aux_classifier.4``.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.fcn import FCNHead

from ..preprocess import SEGMENTATION_512, Preprocessing
from . import register_builder
from .faster_rcnn import resnet50_body

BINS = (1, 2, 3, 6)
CLASSIFIER_KEYS = ("classifier.5", "aux_classifier.4")


@torch.no_grad()
def init_classifier_(conv: nn.Conv2d) -> nn.Conv2d:
    """Per-pixel classifier initialisation (normal, std 0.01, bias 0), as MMSegmentation's decode heads."""
    nn.init.normal_(conv.weight, std=0.01)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class PyramidPooling(nn.Module):
    """Average-pool to each bin size, reduce channels (1x1 conv, BN, ReLU), upsample, concatenate with the input."""

    def __init__(self, in_channels: int, bins: tuple[int, ...] = BINS, channels: int = 512) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(b),
                nn.Conv2d(in_channels, channels, 1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            )
            for b in bins
        )

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(stage(x), size=size, mode="bilinear", align_corners=False) for stage in self.stages]
        return torch.cat([x, *pooled], dim=1)


class PSPHead(nn.Sequential):
    def __init__(self, in_channels: int, num_classes: int, bins: tuple[int, ...] = BINS, channels: int = 512):
        super().__init__(
            PyramidPooling(in_channels, bins, channels),
            nn.Conv2d(in_channels + len(bins) * channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.1),
            init_classifier_(nn.Conv2d(channels, num_classes, 1)),
        )


class PSPNet(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        classifier: nn.Module,
        aux_classifier: nn.Module | None,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier
        # Plain floats, not buffers: nothing to carry in state dicts, and a model built on the meta device and
        # filled with load_state_dict(assign=True) is complete.
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a batch [B, 3, H, W] of RGB images, got shape {tuple(images.shape)}")
        size = images.shape[-2:]
        mean = torch.as_tensor(self.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.as_tensor(self.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        features = self.backbone((images - mean) / std)
        logits = self.classifier(features["out"])
        result = {"out": F.interpolate(logits, size=size, mode="bilinear", align_corners=False)}
        if self.aux_classifier is not None:
            aux = self.aux_classifier(features["aux"])
            result["aux"] = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return result


@register_builder("pspnet_r50")
def pspnet_r50(
    num_classes: int,
    *,
    aux: bool = False,
    preprocessing: Preprocessing | None = None,
    pretrained_backbone: str | Path | None = None,
    compat: str = "torchvision",
) -> PSPNet:
    """PSPNet with pyramid bins (1, 2, 3, 6) on ResNet-50 dilated in layer3/layer4 (output stride 8).

    ``num_classes`` is the number of output channels (VOC 21 with background 0, ADE20K 150). BatchNorm is trainable.
    ``pretrained_backbone``: a local ImageNet ResNet-50 file (never downloaded). Only ``compat="torchvision"``
    exists for this architecture.
    """
    if compat != "torchvision":
        raise ValueError(f"pspnet_r50 has no {compat!r} compat mode")
    pre = preprocessing or SEGMENTATION_512
    body = resnet50_body(pretrained_backbone, norm="bn", replace_stride_with_dilation=[False, True, True])
    return_layers = {"layer4": "out", "layer3": "aux"} if aux else {"layer4": "out"}
    # IntermediateLayerGetter lives in torchvision's private ``models._utils`` (torchvision's own segmentation models
    # use it); it keeps the ResNet's module names, so state dicts keep their keys, which the public fx-based
    # create_feature_extractor does not promise. tests/test_torchvision_internals.py checks it.
    backbone = IntermediateLayerGetter(body, return_layers=return_layers)
    aux_classifier = None
    if aux:
        aux_classifier = FCNHead(1024, num_classes)
        init_classifier_(aux_classifier[4])
    return PSPNet(backbone, PSPHead(2048, num_classes), aux_classifier, pre.mean, pre.std)
