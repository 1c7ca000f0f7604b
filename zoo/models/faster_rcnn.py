"""Faster R-CNN R50-FPN on torchvision, with an MMDetection-compatible numeric mode.

``compat="mmdet"`` reproduces MMDetection's Faster R-CNN R50-FPN test path (configs/_base_/models/faster-rcnn_r50_fpn.py
and the mmdet/mmcv code it names) where it differs from torchvision:

- image preparation (:class:`MMDetTransform`): the resized size is rounded as mmcv's ``rescale_size`` rounds it
  (torchvision floors: 1202 where MMDetection has 1203) and the image is resized on the uint8 grid, rounded back to
  integers, then normalised (MMDetection resizes the uint8 image with OpenCV; torchvision interpolates the normalised
  float image);
- RoI pooling: mmcv ``RoIAlign`` is ``aligned=True, sampling_ratio=0`` with fixed strides (4, 8, 16, 32) and the
  level rule ``floor(log2(sqrt(area) / 56 + 1e-6))``; torchvision's ``MultiScaleRoIAlign`` uses ``aligned=False,
  sampling_ratio=2``;
- anchors: MMDetection's ``AnchorGenerator`` keeps unrounded base anchors and places them at the nominal strides;
  torchvision rounds them to integers and derives each level's stride as padded size // feature size (61 instead of
  64 for P6 at an 800 px side);
- RPN training proposals: MMDetection keeps 1000 after NMS (``rpn_proposal.max_per_img``), torchvision 2000.

The same in both: ResNet-50 "pytorch" style (stride in the 3x3 conv), BN eps 1e-5 frozen at test time, FPN with
nearest upsampling and P6 = max-pool(P5), ratio-major anchor order and anchor-major head channels, RPN per-level
top-1000 then per-level NMS 0.7 keeping 1000, level mapping equivalent to k0=4/224, box coder weights (10, 10, 5, 5)
with the same clamp, score threshold 0.05, class-wise NMS 0.5, 100 detections.
Left as they are (sub-pixel or negligible): the resize interpolates in float where OpenCV uses 11-bit fixed point
(resized pixels one grey level apart at about 1 in 10, see the model cards); torchvision drops proposals narrower
than 1e-3 px and boxes narrower than 0.01 px before the final NMS.

Shared helpers of the ResNet builders (backbone weights, MMDetection anchors and image preparation, compat checks)
live here as well.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign, roi_align

from ..checkpoint import load_foreign
from ..preprocess import DETECTION_800, Preprocessing, mmdet_resized_size
from . import register_builder

Compat = Literal["torchvision", "mmdet"]
COMPAT_MODES: tuple[str, ...] = ("torchvision", "mmdet")
_CPU = torch.device("cpu")


def check_compat(compat: str) -> None:
    if compat not in COMPAT_MODES:
        raise ValueError(f"compat must be one of {COMPAT_MODES}, got {compat!r}")


def load_backbone_weights(resnet: nn.Module, path: str | Path) -> None:
    """Load an ImageNet ResNet state dict in torchvision's layout (``conv1.weight``, ``layer1.0...``; ``fc.*`` is
    ignored) from a local ``.safetensors`` or ``.pth`` file (read with ``weights_only=True``). Nothing is
    downloaded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained backbone file not found: {path}")
    state = load_file(str(path)) if path.suffix == ".safetensors" else load_foreign(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TypeError(f"{path}: expected a state dict, found {type(state).__name__}")
    state = {k: v for k, v in state.items() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    own = {k: v.shape for k, v in resnet.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = [k for k in own if not k.startswith("fc.") and k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k])]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path}: not a torchvision ResNet-50 state dict ({len(missing)} missing keys, e.g. {missing[:3]}; "
            f"{len(unexpected)} unexpected, e.g. {unexpected[:3]}; {len(wrong)} of another shape, e.g. {wrong[:3]})"
        )
    resnet.load_state_dict(state, strict=False)


class FusedFrozenBatchNorm2d(FrozenBatchNorm2d):
    """torchvision's ``FrozenBatchNorm2d`` computed by the fused ``batch_norm`` kernel: one pass over the activations
    instead of a multiply and an add (about 0.2 s of a ResNet-50 at 800 x 1216 on one CPU thread), with the
    arithmetic of ``nn.BatchNorm2d`` in eval mode, as MMDetection runs its frozen BatchNorm."""

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


NORM_LAYERS: dict[str, type[nn.Module]] = {"frozen": FusedFrozenBatchNorm2d, "bn": nn.BatchNorm2d}


def resnet50_body(pretrained_backbone: str | Path | None, *, norm: str = "frozen", **kwargs: Any) -> nn.Module:
    """torchvision ResNet-50 with random weights, or with the weights of a local file.

    ``norm``: "frozen" (FrozenBatchNorm2d: finetuning, inference) or "bn" (trainable BatchNorm2d, which the training
    engine turns into SyncBatchNorm for the paper's SyncBN pretraining)."""
    if norm not in NORM_LAYERS:
        raise ValueError(f"norm must be one of {sorted(NORM_LAYERS)}, got {norm!r}")
    body = resnet50(weights=None, norm_layer=NORM_LAYERS[norm], **kwargs)
    if pretrained_backbone is not None:
        load_backbone_weights(body, pretrained_backbone)
    return body


class UnroundedAnchorGenerator(AnchorGenerator):
    """MMDetection's ``AnchorGenerator``: torchvision's without rounding the base anchors, placed at the nominal
    ``strides`` (torchvision derives a level's stride as padded size // feature size, which is not the stride of
    levels whose feature size was rounded up, such as P6 and P7)."""

    def __init__(self, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[Sequence[float]],
                 strides: Sequence[int]) -> None:
        super().__init__(tuple(sizes), tuple(aspect_ratios))
        if len(strides) != len(self.cell_anchors):
            raise ValueError(f"{len(self.cell_anchors)} anchor levels but {len(strides)} strides")
        self.strides = tuple(strides)

    def generate_anchors(
        self,
        scales: list[float],
        aspect_ratios: list[float],
        dtype: torch.dtype = torch.float32,
        device: torch.device = _CPU,
    ) -> Tensor:
        scales_t = torch.as_tensor(scales, dtype=dtype, device=device)
        ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1 / h_ratios
        ws = (w_ratios[:, None] * scales_t[None, :]).view(-1)
        hs = (h_ratios[:, None] * scales_t[None, :]).view(-1)
        return torch.stack([-ws, -hs, ws, hs], dim=1) / 2

    def forward(self, image_list: ImageList, feature_maps: list[Tensor]) -> list[Tensor]:
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        strides = [[torch.tensor(s, dtype=torch.int64, device=device)] * 2 for s in self.strides]
        self.set_cell_anchors(dtype, device)
        anchors = torch.cat(self.grid_anchors([f.shape[-2:] for f in feature_maps], strides))
        return [anchors for _ in image_list.image_sizes]


class MMDetTransform(GeneralizedRCNNTransform):
    """MMDetection's image preparation: keep-ratio ``Resize`` of the uint8 image to
    :func:`~zoo.preprocess.mmdet_resized_size`, then normalisation and zero padding.

    Images on [0, 1] are taken to the 0..255 grid, resized with half-pixel-centred bilinear interpolation (OpenCV's
    geometry; a same-size resize is a copy, as in OpenCV) and rounded to integers, then normalised with ``image_mean``
    and ``image_std`` (on the [0, 1] scale, times 255). ``normalize`` only checks the type: ``resize`` normalises
    after resizing. Training targets' boxes are scaled with the image."""

    def normalize(self, image: Tensor) -> Tensor:
        if not image.is_floating_point():
            raise TypeError(f"expected float images on [0, 1], got {image.dtype}")
        return image

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None
               ) -> tuple[Tensor, dict[str, Tensor] | None]:
        height, width = image.shape[-2:]
        short = self.torch_choice(self.min_size) if self.training else self.min_size[-1]
        size = mmdet_resized_size(height, width, short, self.max_size)
        pixels = image.mul(255).round_().clamp_(0, 255)
        if size != (height, width):
            pixels = F.interpolate(pixels[None], size=size, mode="bilinear", align_corners=False)[0].round_()
        mean = torch.as_tensor([m * 255 for m in self.image_mean], dtype=image.dtype, device=image.device)
        std = torch.as_tensor([s * 255 for s in self.image_std], dtype=image.dtype, device=image.device)
        out = (pixels - mean[:, None, None]) / std[:, None, None]
        if target is not None:
            target["boxes"] = resize_boxes(target["boxes"], (height, width), size)
        return out, target


class MMDetRoIAlign(MultiScaleRoIAlign):
    """Multi-level RoIAlign as MMDetection's ``SingleRoIExtractor`` with mmcv ``RoIAlign``: fixed strides,
    ``aligned=True``, adaptive sampling (``sampling_ratio=0``), level ``floor(log2(sqrt(wh) / 56 + 1e-6))``.
    Subclasses torchvision's ``MultiScaleRoIAlign`` (which ``FasterRCNN`` requires) and replaces its pooling."""

    def __init__(
        self,
        featmap_names: list[str],
        strides: tuple[int, ...] = (4, 8, 16, 32),
        output_size: int = 7,
        sampling_ratio: int = 0,
        finest_scale: float = 56.0,
    ) -> None:
        super().__init__(list(featmap_names), output_size, sampling_ratio)
        if len(featmap_names) != len(strides):
            raise ValueError("featmap_names and strides must have the same length")
        self.strides = tuple(strides)
        self.finest_scale = finest_scale

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        feats = [x[name] for name in self.featmap_names]
        rois = torch.cat(
            [torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)], dim=0
        )
        scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
        levels = torch.floor(torch.log2(scale / self.finest_scale + 1e-6)).clamp(0, len(feats) - 1).long()
        out = feats[0].new_zeros((rois.shape[0], feats[0].shape[1]) + self.output_size)
        for level, (feat, stride) in enumerate(zip(feats, self.strides)):
            idx = torch.where(levels == level)[0]
            pooled = roi_align(
                feat, rois[idx], self.output_size, spatial_scale=1.0 / stride,
                sampling_ratio=self.sampling_ratio, aligned=True,
            )
            out[idx] = pooled.to(out.dtype)
        return out


RPN_STRIDES = (4, 8, 16, 32, 64)


def rpn_anchor_generator(compat: Compat) -> AnchorGenerator:
    """Anchors of the R50-FPN RPN: one size per level (stride x 8), ratios 0.5/1/2."""
    sizes = tuple((8 * s,) for s in RPN_STRIDES)
    ratios = ((0.5, 1.0, 2.0),) * len(sizes)
    if compat == "mmdet":
        return UnroundedAnchorGenerator(sizes, ratios, RPN_STRIDES)
    return AnchorGenerator(sizes, ratios)


def use_mmdet_transform(model: nn.Module) -> None:
    """Replace a torchvision detector's ``GeneralizedRCNNTransform`` by :class:`MMDetTransform` with its settings."""
    t = model.transform
    if not isinstance(t, GeneralizedRCNNTransform):
        raise TypeError(f"{type(model).__name__} has no GeneralizedRCNNTransform to replace")
    model.transform = MMDetTransform(t.min_size, t.max_size, t.image_mean, t.image_std, t.size_divisible)


@register_builder("fasterrcnn_r50_fpn")
def fasterrcnn_r50_fpn(
    num_classes: int,
    *,
    compat: Compat = "torchvision",
    preprocessing: Preprocessing | None = None,
    pretrained_backbone: str | Path | None = None,
    trainable_backbone_layers: int = 3,
    norm: str = "frozen",
    **kwargs: Any,
) -> FasterRCNN:
    """torchvision ``FasterRCNN`` on ResNet-50-FPN with ``num_classes`` = C + 1 (label 0 background).

    Backbone BatchNorm is frozen (``FrozenBatchNorm2d``), as MMDetection's ``norm_eval`` and torchvision's pretrained
    detectors do; ``norm="bn"`` makes it trainable (SyncBN pretraining). ``pretrained_backbone``: a local ImageNet
    ResNet-50 file (never downloaded).
    ``kwargs`` go to ``FasterRCNN`` and override the values derived from ``preprocessing``.
    """
    check_compat(compat)
    pre = preprocessing or DETECTION_800
    # torchvision's private ``_resnet_fpn_extractor`` wraps a ResNet we built (BatchNorm choice, our ImageNet file)
    # in its FPN with the layer freezing of ``trainable_layers``; the public resnet_fpn_backbone builds its own ResNet.
    # tests/test_torchvision_internals.py checks its outputs and freezing.
    backbone = _resnet_fpn_extractor(resnet50_body(pretrained_backbone, norm=norm), trainable_backbone_layers)
    options: dict[str, Any] = {
        **pre.transform_kwargs(),
        "box_score_thresh": pre.score_threshold,
        "box_nms_thresh": pre.nms_threshold,
        "box_detections_per_img": pre.max_detections,
        "rpn_anchor_generator": rpn_anchor_generator(compat),
    }
    if compat == "mmdet":
        options.update(box_roi_pool=MMDetRoIAlign(["0", "1", "2", "3"]), rpn_post_nms_top_n_train=1000)
    options.update(kwargs)
    model = FasterRCNN(backbone, num_classes=num_classes, **options)
    if compat == "mmdet":
        use_mmdet_transform(model)
    return model
