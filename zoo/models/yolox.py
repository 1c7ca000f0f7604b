"""YOLOX (Ge et al. 2021, "YOLOX: Exceeding YOLO Series in 2021"), written on torch building blocks.

The depthwise CSPDarknet backbone, the PAFPN neck and the decoupled head (class / box / objectness branches), with
the parameter names of Megvii's reference implementation, so that a ``yolox_*.pth`` state dict loads as it is. The
Nano configuration (depth 0.33, width 0.25, depthwise convolutions, SiLU) is :func:`yolox_nano`.

Zoo conventions (``zoo.models``): the model takes a list of RGB ``[3, H, W]`` tensors on [0, 1] and preprocesses them
itself with its :class:`~zoo.preprocess.Preprocessing` (``YOLOX_416``: letterbox into the top-left of a 416 x 416
canvas padded with grey 114, BGR on 0..255, exactly the input of the original graph); labels are ``1..C`` (YOLOX
class ``c`` is label ``c + 1``; there is no background row in the head). In eval mode it returns
``[{"boxes", "scores", "labels"}]`` in input pixels after YOLOX's decoding (``cx = (dx + grid_x) * stride``,
``w = exp(dw) * stride``; score = objectness x best class score) and class-aware NMS; in train mode, given targets,
it returns YOLOX's losses (:mod:`zoo.models.yolox_loss`: SimOTA assignment, IoU loss, BCE objectness and class).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

from ..preprocess import YOLOX_416, Preprocessing, letterbox_geometry
from . import register_builder

STRIDES: tuple[int, int, int] = (8, 16, 32)
# YOLOX initialises BatchNorm with eps 1e-3 and momentum 0.03 (``init_yolo`` in the reference exps).
BN_EPS = 1e-3
BN_MOMENTUM = 0.03
PRIOR_PROB = 1e-2  # initial class / objectness probability of the prediction biases
PRIOR_BIAS = -math.log((1 - PRIOR_PROB) / PRIOR_PROB)


class BaseConv(nn.Module):
    """Conv -> BatchNorm -> SiLU (``same`` padding)."""

    def __init__(self, in_ch: int, out_ch: int, ksize: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, ksize, stride, (ksize - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class DWConv(nn.Module):
    """Depthwise ``ksize`` convolution then pointwise 1x1, each a :class:`BaseConv`."""

    def __init__(self, in_ch: int, out_ch: int, ksize: int, stride: int = 1) -> None:
        super().__init__()
        self.dconv = BaseConv(in_ch, in_ch, ksize, stride, groups=in_ch)
        self.pconv = BaseConv(in_ch, out_ch, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pconv(self.dconv(x))


def _conv(depthwise: bool) -> type[nn.Module]:
    return DWConv if depthwise else BaseConv


class Bottleneck(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, shortcut: bool, depthwise: bool) -> None:
        super().__init__()
        self.conv1 = BaseConv(in_ch, out_ch, 1, 1)
        self.conv2 = _conv(depthwise)(out_ch, out_ch, 3, 1)
        self.use_add = shortcut and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(self.conv1(x))
        return y + x if self.use_add else y


class CSPLayer(nn.Module):
    """Cross-stage partial block: two 1x1 branches, ``n`` bottlenecks on the first, concatenated and fused."""

    def __init__(self, in_ch: int, out_ch: int, n: int, shortcut: bool = True, depthwise: bool = False) -> None:
        super().__init__()
        hidden = out_ch // 2
        self.conv1 = BaseConv(in_ch, hidden, 1, 1)
        self.conv2 = BaseConv(in_ch, hidden, 1, 1)
        self.conv3 = BaseConv(2 * hidden, out_ch, 1, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, depthwise) for _ in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        first = self.conv1(x)
        second = self.conv2(x)
        return self.conv3(torch.cat([self.m(first), second], dim=1))


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling (max pools 5, 9, 13 at stride 1) between two 1x1 convolutions."""

    def __init__(self, in_ch: int, out_ch: int, kernels: Sequence[int] = (5, 9, 13)) -> None:
        super().__init__()
        hidden = in_ch // 2
        self.conv1 = BaseConv(in_ch, hidden, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernels)
        self.conv2 = BaseConv(hidden * (len(kernels) + 1), out_ch, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        pooled = [x]
        for pool in self.m:
            pooled.append(pool(x))
        return self.conv2(torch.cat(pooled, dim=1))


class Focus(nn.Module):
    """Space-to-depth (2x2 pixel blocks into channels, in YOLOX's order) then a :class:`BaseConv`."""

    def __init__(self, in_ch: int, out_ch: int, ksize: int = 3) -> None:
        super().__init__()
        self.conv = BaseConv(in_ch * 4, out_ch, ksize, 1)

    def forward(self, x: Tensor) -> Tensor:
        top_left, top_right = x[..., ::2, ::2], x[..., ::2, 1::2]
        bot_left, bot_right = x[..., 1::2, ::2], x[..., 1::2, 1::2]
        return self.conv(torch.cat([top_left, bot_left, top_right, bot_right], dim=1))


class CSPDarknet(nn.Module):
    """CSPDarknet-53 scaled by ``depth`` / ``width``; returns dark3, dark4, dark5 (strides 8, 16, 32)."""

    def __init__(self, depth: float, width: float, depthwise: bool) -> None:
        super().__init__()
        conv = _conv(depthwise)
        ch = int(width * 64)
        n = max(round(depth * 3), 1)
        self.stem = Focus(3, ch, 3)
        self.dark2 = nn.Sequential(conv(ch, ch * 2, 3, 2), CSPLayer(ch * 2, ch * 2, n, depthwise=depthwise))
        self.dark3 = nn.Sequential(conv(ch * 2, ch * 4, 3, 2), CSPLayer(ch * 4, ch * 4, n * 3, depthwise=depthwise))
        self.dark4 = nn.Sequential(conv(ch * 4, ch * 8, 3, 2), CSPLayer(ch * 8, ch * 8, n * 3, depthwise=depthwise))
        self.dark5 = nn.Sequential(conv(ch * 8, ch * 16, 3, 2), SPPBottleneck(ch * 16, ch * 16),
                                   CSPLayer(ch * 16, ch * 16, n, shortcut=False, depthwise=depthwise))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.dark2(self.stem(x))
        c3 = self.dark3(x)
        c4 = self.dark4(c3)
        return c3, c4, self.dark5(c4)


class YOLOPAFPN(nn.Module):
    """CSPDarknet plus YOLOX's path-aggregation FPN; returns P3, P4, P5."""

    def __init__(self, depth: float, width: float, depthwise: bool) -> None:
        super().__init__()
        conv = _conv(depthwise)
        c3, c4, c5 = (int(c * width) for c in (256, 512, 1024))
        n = round(3 * depth)
        self.backbone = CSPDarknet(depth, width, depthwise)
        self.lateral_conv0 = BaseConv(c5, c4, 1, 1)
        self.C3_p4 = CSPLayer(2 * c4, c4, n, False, depthwise)
        self.reduce_conv1 = BaseConv(c4, c3, 1, 1)
        self.C3_p3 = CSPLayer(2 * c3, c3, n, False, depthwise)
        self.bu_conv2 = conv(c3, c3, 3, 2)
        self.C3_n3 = CSPLayer(2 * c3, c4, n, False, depthwise)
        self.bu_conv1 = conv(c4, c4, 3, 2)
        self.C3_n4 = CSPLayer(2 * c4, c5, n, False, depthwise)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x2, x1, x0 = self.backbone(x)
        fpn_out0 = self.lateral_conv0(x0)
        f_out0 = self.C3_p4(torch.cat([F.interpolate(fpn_out0, scale_factor=2.0, mode="nearest"), x1], 1))
        fpn_out1 = self.reduce_conv1(f_out0)
        pan_out2 = self.C3_p3(torch.cat([F.interpolate(fpn_out1, scale_factor=2.0, mode="nearest"), x2], 1))
        pan_out1 = self.C3_n3(torch.cat([self.bu_conv2(pan_out2), fpn_out1], 1))
        pan_out0 = self.C3_n4(torch.cat([self.bu_conv1(pan_out1), fpn_out0], 1))
        return pan_out2, pan_out1, pan_out0


class YOLOXHead(nn.Module):
    """Decoupled head: per level a 1x1 stem, two 3x3 convs for classes and two for boxes + objectness.

    Returns ``[B, A, 5 + K]`` raw outputs over all levels (A = sum of H_l x W_l): box ``(dx, dy, log w, log h)`` in
    stride units, objectness logit, K class logits."""

    def __init__(self, num_classes: int, width: float, depthwise: bool,
                 in_channels: Sequence[int] = (256, 512, 1024)) -> None:
        super().__init__()
        conv = _conv(depthwise)
        hidden = int(256 * width)
        self.num_classes = num_classes
        self.stems = nn.ModuleList(BaseConv(int(c * width), hidden, 1, 1) for c in in_channels)
        self.cls_convs = nn.ModuleList(nn.Sequential(conv(hidden, hidden, 3, 1), conv(hidden, hidden, 3, 1))
                                       for _ in in_channels)
        self.reg_convs = nn.ModuleList(nn.Sequential(conv(hidden, hidden, 3, 1), conv(hidden, hidden, 3, 1))
                                       for _ in in_channels)
        self.cls_preds = nn.ModuleList(nn.Conv2d(hidden, num_classes, 1) for _ in in_channels)
        self.reg_preds = nn.ModuleList(nn.Conv2d(hidden, 4, 1) for _ in in_channels)
        self.obj_preds = nn.ModuleList(nn.Conv2d(hidden, 1, 1) for _ in in_channels)
        self.reset_prediction_biases()

    def reset_prediction_biases(self) -> None:
        """Class and objectness biases at the prior probability 0.01 (the reference's ``initialize_biases``)."""
        for layer in (*self.cls_preds, *self.obj_preds):
            nn.init.constant_(layer.bias, PRIOR_BIAS)

    def forward(self, features: list[Tensor]) -> Tensor:
        outputs: list[Tensor] = []
        levels = zip(self.stems, self.cls_convs, self.cls_preds, self.reg_convs, self.reg_preds, self.obj_preds)
        for k, (stem, cls_convs, cls_pred, reg_convs, reg_pred, obj_pred) in enumerate(levels):
            x = stem(features[k])
            cls_out = cls_pred(cls_convs(x))
            reg_feat = reg_convs(x)
            out = torch.cat([reg_pred(reg_feat), obj_pred(reg_feat), cls_out], dim=1)
            outputs.append(out.flatten(2))
        return torch.cat(outputs, dim=2).permute(0, 2, 1)


def grid_and_strides(height: int, width: int, strides: Sequence[int] = STRIDES, device: torch.device | None = None,
                     dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Cell coordinates ``[A, 2]`` (x, y) and strides ``[A, 1]`` of every output row, level after level."""
    grids, stride_rows = [], []
    for s in strides:
        ys, xs = torch.meshgrid(torch.arange(height // s, device=device, dtype=dtype),
                                torch.arange(width // s, device=device, dtype=dtype), indexing="ij")
        grid = torch.stack([xs, ys], dim=-1).reshape(-1, 2)
        grids.append(grid)
        stride_rows.append(torch.full((grid.shape[0], 1), float(s), device=device, dtype=dtype))
    return torch.cat(grids), torch.cat(stride_rows)


def decode_outputs(raw: Tensor, grid: Tensor, strides: Tensor) -> Tensor:
    """Raw head outputs ``[B, A, 5 + K]`` -> ``[B, A, 4 + 1 + K]``: boxes xyxy in input pixels, objectness and
    class probabilities (sigmoid)."""
    centre = (raw[..., :2] + grid) * strides
    size = torch.exp(raw[..., 2:4]) * strides
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1)
    return torch.cat([boxes, torch.sigmoid(raw[..., 4:])], dim=-1)


class LetterboxTransform(nn.Module):
    """Photos -> the network's fixed input: each image resized by ``min(H / h, W / w)`` (bilinear, antialiased
    when shrinking, as Pillow's resize), placed top-left on a canvas of ``pad_value``, then normalised with the
    preprocessing's mean/std and put in its channel order. The same geometry as :func:`zoo.preprocess.letterbox`."""

    def __init__(self, pre: Preprocessing) -> None:
        super().__init__()
        self.size = (pre.min_size, pre.max_size)
        self.pad_value = pre.pad_value
        self.bgr = pre.channels == "BGR"
        self.mean = tuple(pre.mean)
        self.std = tuple(pre.std)

    def canvas(self, images: Sequence[Tensor]) -> tuple[Tensor, list[float]]:
        """``(batch [B, 3, H, W] on [0, 1] RGB, scales)``: letterboxed but not yet normalised."""
        height, width = self.size
        batch = images[0].new_full((len(images), 3, height, width), self.pad_value)
        scales = []
        for b, image in enumerate(images):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"expected an RGB image tensor [3, H, W], got shape {tuple(image.shape)}")
            scale, new_h, new_w = letterbox_geometry(image.shape[-2], image.shape[-1], (height, width))
            resized = image
            if (new_h, new_w) != tuple(image.shape[-2:]):
                resized = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False,
                                        antialias=scale < 1)[0].clamp_(0, 1)
            batch[b, :, :new_h, :new_w] = resized
            scales.append(scale)
        return batch, scales

    def normalize(self, batch: Tensor) -> Tensor:
        x = (batch - batch.new_tensor(self.mean).view(1, 3, 1, 1)) / batch.new_tensor(self.std).view(1, 3, 1, 1)
        return x.flip(1) if self.bgr else x

    def forward(self, images: Sequence[Tensor]) -> tuple[Tensor, list[float]]:
        batch, scales = self.canvas(images)
        return self.normalize(batch), scales


class YOLOX(nn.Module):
    """YOLOX detector following the zoo's detection conventions (see the module docstring)."""

    def __init__(self, num_classes: int, *, depth: float, width: float, depthwise: bool,
                 preprocessing: Preprocessing = YOLOX_416, frozen_bn: bool = True) -> None:
        super().__init__()
        self.frozen_bn = frozen_bn
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
        self.transform = LetterboxTransform(preprocessing)
        self.backbone = YOLOPAFPN(depth, width, depthwise)
        self.head = YOLOXHead(num_classes - 1, width, depthwise)
        self.score_thresh = preprocessing.score_threshold
        self.nms_thresh = preprocessing.nms_threshold
        self.detections_per_img = preprocessing.max_detections

    def train(self, mode: bool = True) -> YOLOX:
        """Train mode; with ``frozen_bn`` (the default) BatchNorm keeps its statistics (eval mode) while its affine
        parameters train, as torchvision's detectors freeze theirs: finetuning batches are small, and the shipped
        weights carry folded BatchNorm whose identity statistics only hold the pretrained function when frozen."""
        super().train(mode)
        if mode and self.frozen_bn:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    def set_input_size(self, height: int, width: int) -> None:
        """Letterbox into ``height x width`` (multiples of 32) instead of the preprocessing's size."""
        if height % 32 or width % 32 or min(height, width) < 32:
            raise ValueError(f"YOLOX input sides must be positive multiples of 32, got {height}x{width}")
        self.transform.size = (height, width)

    def raw_outputs(self, x: Tensor) -> Tensor:
        """Head outputs ``[B, A, 5 + K]`` for a preprocessed batch."""
        return self.head(list(self.backbone(x)))

    def forward(self, images: Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None = None
                ) -> list[dict[str, Tensor]] | dict[str, Tensor]:
        x, scales = self.transform(images)
        raw = self.raw_outputs(x)
        grid, strides = grid_and_strides(x.shape[-2], x.shape[-1], device=x.device, dtype=raw.dtype)
        if self.training:
            if targets is None:
                raise ValueError("in training mode YOLOX needs targets (boxes xyxy in input pixels, labels 1..C)")
            from .yolox_loss import yolox_losses

            scaled = [{"boxes": t["boxes"] * s, "labels": t["labels"]} for t, s in zip(targets, scales)]
            return yolox_losses(raw, grid, strides, scaled)
        decoded = decode_outputs(raw, grid, strides)
        return [self._postprocess(d, s, img.shape[-2:]) for d, s, img in zip(decoded, scales, images)]

    def _postprocess(self, decoded: Tensor, scale: float, size: Sequence[int]) -> dict[str, Tensor]:
        class_scores, classes = decoded[:, 5:].max(dim=1)
        scores = decoded[:, 4] * class_scores
        keep = scores > self.score_thresh
        boxes, scores, classes = decoded[keep, :4], scores[keep], classes[keep]
        kept = batched_nms(boxes, scores, classes, self.nms_thresh)[: self.detections_per_img]
        boxes = boxes[kept] / scale
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, int(size[1]))
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, int(size[0]))
        return {"boxes": boxes, "scores": scores[kept], "labels": classes[kept] + 1}


@register_builder("yolox_nano")
def yolox_nano(num_classes: int, *, preprocessing: Preprocessing | None = None, **kw: Any) -> YOLOX:
    """YOLOX-Nano (depth 0.33, width 0.25, depthwise; 0.91M parameters at 80 classes); ``num_classes`` counts the
    background (81 for COCO-80). ``frozen_bn=False`` trains BatchNorm statistics too (large-batch training from
    scratch)."""
    compat = kw.pop("compat", "torchvision")
    frozen_bn = bool(kw.pop("frozen_bn", True))
    if compat != "torchvision" or kw:
        raise ValueError(f"yolox_nano takes preprocessing and frozen_bn only, got compat={compat!r} {kw}")
    return YOLOX(num_classes, depth=0.33, width=0.25, depthwise=True, preprocessing=preprocessing or YOLOX_416,
                 frozen_bn=frozen_bn)
