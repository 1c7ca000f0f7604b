"""Export graphs: torchvision-style models rewritten as fixed-size, dynamic-batch tensor programs.

torchvision's detectors take a list of images and loop over it in Python for the transform, the RPN proposal filter
and the post-processing; tracing unrolls those loops to the example's batch size (pytorch/vision #2311, #8937) and the
outputs have a data-dependent length. The graphs here reuse the model's own modules and numbers (backbone, heads,
anchor generator, box coders, thresholds, RoI pooler) and reorganise the per-image steps as batched tensor algebra:

- input ``images [B, 3, H, W]`` float RGB on [0, 1], ``H, W`` fixed at construction (the resize factor, padding and
  anchors are constants of the graph; a serving step letterboxes photos to that size), ``B`` dynamic;
- thresholds become masks (score ``-1``), the per-image NMS one :func:`export.nms.multiclass_nms` over the batch;
- output padded to the model's ``D`` detections: ``boxes [B, D, 4]`` (xyxy, input pixels), ``scores [B, D]``,
  ``labels [B, D]`` int64 (0 in padding), ``num_detections [B]`` int64.
Segmentation: ``labels [B, H, W]`` (argmax, int64) and ``logits [B, K, H, W]``.

Every graph is scriptable (TorchScript) and exports to ONNX after :meth:`DetectionGraph.use_onnx_nms`.
"""

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.poolers import _setup_scales

from zoo.models.yolox import YOLOX, LetterboxTransform, decode_outputs, grid_and_strides
from zoo.vocabulary import DETECTION, SEGMENTATION

from .nms import OnnxMulticlassNms, is_candidate, keep_mask, mask_scores, multiclass_nms


class ExportUnsupportedError(TypeError):
    """The model is not one of the architectures the export graphs know."""


def decode_boxes(codes: Tensor, ref: Tensor, weights: list[float], clip: float) -> Tensor:
    """torchvision ``BoxCoder.decode_single`` on ``[..., 4]`` tensors (same operations, broadcasting ``ref``)."""
    widths = ref[..., 2] - ref[..., 0]
    heights = ref[..., 3] - ref[..., 1]
    ctr_x = ref[..., 0] + 0.5 * widths
    ctr_y = ref[..., 1] + 0.5 * heights
    dx = codes[..., 0] / weights[0]
    dy = codes[..., 1] / weights[1]
    dw = torch.clamp(codes[..., 2] / weights[2], max=clip)
    dh = torch.clamp(codes[..., 3] / weights[3], max=clip)
    pred_ctr_x = dx * widths + ctr_x
    pred_ctr_y = dy * heights + ctr_y
    half_w = 0.5 * (torch.exp(dw) * widths)
    half_h = 0.5 * (torch.exp(dh) * heights)
    return torch.stack([pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h], dim=-1)


def clip_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def _gather_rows(values: Tensor, index: Tensor) -> Tensor:
    """``values[b, index[b, i]]`` for ``values [B, N, 4]`` and ``index [B, M]``."""
    return torch.gather(values, 1, index.unsqueeze(-1).expand(-1, -1, values.shape[-1]))


class DetectionGraph(nn.Module):
    """Shared input transform (normalise, resize, pad) and output padding of the detection graphs."""

    mean: Tensor
    std: Tensor
    box_scale: Tensor

    def __init__(self, model: nn.Module, image_size: tuple[int, int]) -> None:
        super().__init__()
        height, width = image_size
        transform = model.transform
        self.in_size = (height, width)
        self.flip_channels = False
        if isinstance(transform, LetterboxTransform):
            # the graph's input is already the letterboxed canvas: normalise (and reorder channels) only
            self.resized = self.padded = self.in_size
            mean, std, self.flip_channels = list(transform.mean), list(transform.std), transform.bgr
        elif isinstance(transform, GeneralizedRCNNTransform):
            with torch.no_grad():
                batch, _ = transform([torch.zeros(3, height, width)])
            self.resized = (int(batch.image_sizes[0][0]), int(batch.image_sizes[0][1]))
            self.padded = (int(batch.tensors.shape[-2]), int(batch.tensors.shape[-1]))
            mean, std = transform.image_mean, transform.image_std
        else:
            raise ExportUnsupportedError(f"input transform {type(transform).__name__} is not supported by the export")
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        # The box rescale of GeneralizedRCNNTransform.postprocess, as float32 ratios (input / resized).
        ratio_h = torch.tensor(height, dtype=torch.float32) / torch.tensor(self.resized[0], dtype=torch.float32)
        ratio_w = torch.tensor(width, dtype=torch.float32) / torch.tensor(self.resized[1], dtype=torch.float32)
        self.register_buffer("box_scale", torch.stack([ratio_w, ratio_h, ratio_w, ratio_h]), persistent=False)
        self.onnx_nms = False

    def use_onnx_nms(self) -> "DetectionGraph":
        """Make NMS export as ONNX ``NonMaxSuppression`` (for ``torch.onnx.export``; not scriptable then)."""
        self.onnx_nms = True
        return self

    def prepare(self, images: Tensor) -> Tensor:
        x = (images - self.mean) / self.std
        if self.flip_channels:
            x = x.flip(1)
        if self.resized != self.in_size:
            x = F.interpolate(x, size=self.resized, mode="bilinear", align_corners=False)
        if self.padded != self.resized:
            x = F.pad(x, [0, self.padded[1] - self.resized[1], 0, self.padded[0] - self.resized[0]])
        return x

    def nms(self, boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
        if self.onnx_nms:
            return self._onnx_nms(boxes, scores, iou_threshold)
        return multiclass_nms(boxes, scores, iou_threshold)

    @torch.jit.unused
    def _onnx_nms(self, boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
        return OnnxMulticlassNms.apply(boxes, scores, iou_threshold)

    def finish(self, boxes: Tensor, scores: Tensor, labels: Tensor, count: int
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Top ``count`` of ``scores [B, M]`` (``-1`` = dropped), padded, boxes rescaled to input pixels."""
        k = min(count, scores.shape[1])
        top, idx = scores.topk(k, dim=1)
        valid = is_candidate(top)
        out_boxes = _gather_rows(boxes, idx) * self.box_scale
        out_boxes = torch.where(valid.unsqueeze(-1), out_boxes, torch.zeros_like(out_boxes))
        out_scores = torch.where(valid, top, torch.zeros_like(top))
        out_labels = torch.where(valid, torch.gather(labels, 1, idx), torch.zeros_like(idx))
        if k < count:
            out_boxes = F.pad(out_boxes, [0, 0, 0, count - k])
            out_scores = F.pad(out_scores, [0, count - k])
            out_labels = F.pad(out_labels, [0, count - k])
        return out_boxes, out_scores, out_labels, valid.sum(dim=1)

    def anchors_and_features(self, backbone: nn.Module, anchor_generator: nn.Module
                             ) -> tuple[Tensor, list[int], dict[str, Tensor]]:
        """The model's anchors for the fixed size ``[N, 4]``, anchors per level, and example features."""
        with torch.no_grad():
            dummy = torch.zeros(1, 3, self.padded[0], self.padded[1])
            features = backbone(dummy)
            feats = list(features.values())
            anchors = anchor_generator(ImageList(dummy, [self.resized]), feats)[0]
        per_location = anchors.shape[0] // sum(f.shape[-2] * f.shape[-1] for f in feats)
        return anchors, [f.shape[-2] * f.shape[-1] * per_location for f in feats], features


class RetinaNetGraph(DetectionGraph):
    """torchvision ``RetinaNet`` inference: per-level top-k candidates, class-wise NMS, top ``D``; the zoo's
    MMDetection-compatible RetinaNet also drops boxes of zero width or height before NMS."""

    anchors: Tensor

    def __init__(self, model: RetinaNet, image_size: tuple[int, int]) -> None:
        from zoo.models.retinanet import MMDetRetinaNet

        super().__init__(model, image_size)
        self.drop_empty = isinstance(model, MMDetRetinaNet)
        self.backbone = model.backbone
        self.head = model.head
        anchors, per_level, _ = self.anchors_and_features(model.backbone, model.anchor_generator)
        self.register_buffer("anchors", anchors, persistent=False)
        starts = [0]
        for n in per_level[:-1]:
            starts.append(starts[-1] + n)
        self.levels = list(zip(starts, per_level))
        self.coder_weights = [float(w) for w in model.box_coder.weights]
        self.coder_clip = float(model.box_coder.bbox_xform_clip)
        self.score_thresh = float(model.score_thresh)
        self.nms_thresh = float(model.nms_thresh)
        self.topk_candidates = int(model.topk_candidates)
        self.detections = int(model.detections_per_img)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        features = list(self.backbone(self.prepare(images)).values())
        out = self.head(features)
        logits, regression = out["cls_logits"], out["bbox_regression"]
        num_classes = logits.shape[-1]
        scores_l: list[Tensor] = []
        anchors_l: list[Tensor] = []
        labels_l: list[Tensor] = []
        for start, count in self.levels:
            flat = logits[:, start : start + count, :].reshape(logits.shape[0], -1)
            # sigmoid is monotonic: pick the top-k logits, then squash only those
            top, idx = flat.topk(min(self.topk_candidates, count * num_classes), dim=1)
            scores_l.append(torch.sigmoid(top))
            anchors_l.append(torch.div(idx, num_classes, rounding_mode="floor") + start)
            labels_l.append(idx % num_classes)
        scores = torch.cat(scores_l, dim=1)
        anchor_idx = torch.cat(anchors_l, dim=1)
        labels = torch.cat(labels_l, dim=1)
        boxes = decode_boxes(_gather_rows(regression, anchor_idx), self.anchors[anchor_idx], self.coder_weights,
                             self.coder_clip)
        boxes = clip_boxes(boxes, self.resized[0], self.resized[1])
        valid = scores > self.score_thresh
        if self.drop_empty:
            valid = valid & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
        scores = mask_scores(scores, valid)
        per_class = torch.full((scores.shape[0], num_classes, scores.shape[1]), -1.0, dtype=scores.dtype,
                               device=scores.device)
        per_class = per_class.scatter(1, labels.unsqueeze(1), scores.unsqueeze(1))
        kept = keep_mask(self.nms(boxes, per_class, self.nms_thresh), list(per_class.shape)).any(dim=1)
        scores = mask_scores(scores, kept)
        return self.finish(boxes, scores, labels, self.detections)


class YoloxGraph(DetectionGraph):
    """:class:`zoo.models.yolox.YOLOX` inference on the letterboxed canvas: decoding, score = objectness x best
    class, class-aware NMS, top ``D`` (boxes clipped to the canvas after NMS, as the eager model clips)."""

    grid: Tensor
    strides: Tensor

    def __init__(self, model: YOLOX, image_size: tuple[int, int]) -> None:
        super().__init__(model, image_size)
        if image_size[0] % 32 or image_size[1] % 32:
            raise ValueError(f"YOLOX exports need sides that are multiples of 32, got {image_size}")
        self.backbone = model.backbone
        self.head = model.head
        grid, strides = grid_and_strides(*image_size)
        self.register_buffer("grid", grid, persistent=False)
        self.register_buffer("strides", strides, persistent=False)
        self.score_thresh = float(model.score_thresh)
        self.nms_thresh = float(model.nms_thresh)
        self.detections = int(model.detections_per_img)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        decoded = decode_outputs(self.head(list(self.backbone(self.prepare(images)))), self.grid, self.strides)
        boxes = decoded[..., :4]
        class_scores, classes = decoded[..., 5:].max(dim=-1)
        scores = decoded[..., 4] * class_scores
        scores = mask_scores(scores, scores > self.score_thresh)
        num_classes = decoded.shape[-1] - 5
        per_class = torch.full((scores.shape[0], num_classes, scores.shape[1]), -1.0, dtype=scores.dtype,
                               device=scores.device)
        per_class = per_class.scatter(1, classes.unsqueeze(1), scores.unsqueeze(1))
        kept = keep_mask(self.nms(boxes, per_class, self.nms_thresh), list(per_class.shape)).any(dim=1)
        scores = mask_scores(scores, kept)
        boxes = clip_boxes(boxes, self.in_size[0], self.in_size[1])
        return self.finish(boxes, scores, classes + 1, self.detections)


class BatchedRoIAlign(nn.Module):
    """A detector's multi-level RoIAlign on ``boxes [B, P, 4]``: torchvision's ``MultiScaleRoIAlign`` or the
    zoo's MMDetection-style pooler (fixed strides, ``aligned=True``, level ``floor(log2(s / 56 + 1e-6))``)."""

    def __init__(self, pooler: nn.Module, features: dict[str, Tensor], image_size: tuple[int, int]) -> None:
        super().__init__()
        from zoo.models.faster_rcnn import MMDetRoIAlign

        if not isinstance(pooler, MultiScaleRoIAlign):  # MMDetRoIAlign subclasses it
            raise ExportUnsupportedError(f"RoI pooler {type(pooler).__name__} is not supported by the export")
        self.names = list(pooler.featmap_names)
        self.output_size = (int(pooler.output_size[0]), int(pooler.output_size[1]))
        self.sampling_ratio = int(pooler.sampling_ratio)
        if isinstance(pooler, MMDetRoIAlign):
            self.scales = [1.0 / s for s in pooler.strides]
            self.aligned = True
            # level = floor(log2(s / finest + eps)), clamped to the levels
            self.mmdet_rule = True
            self.s0, self.lvl0, self.eps = float(pooler.finest_scale), 0.0, 1e-6
            self.k_min, self.k_max = 0, len(self.names) - 1
        else:
            # torchvision computes a MultiScaleRoIAlign's level scales and mapper in its private ``_setup_scales``
            # on the first forward, with no public function for it; the graph needs them for its fixed input size
            # before any forward. tests/test_torchvision_internals.py checks that it matches the pooler's own.
            scales, mapper = _setup_scales([features[n] for n in self.names], [image_size], pooler.canonical_scale,
                                           pooler.canonical_level)
            self.scales = [float(s) for s in scales]
            self.aligned = False
            self.mmdet_rule = False
            self.s0, self.lvl0, self.eps = float(mapper.s0), float(mapper.lvl0), float(mapper.eps)
            self.k_min, self.k_max = int(mapper.k_min), int(mapper.k_max)

    def forward(self, features: dict[str, Tensor], boxes: Tensor) -> Tensor:
        # image index of every box, built without the batch size as a Python number (dynamic batch in ONNX)
        batch_idx = torch.ones_like(boxes[:, :, :1]).cumsum(dim=0) - 1
        rois = torch.cat([batch_idx, boxes], dim=2).reshape(-1, 5)
        size = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
        if self.mmdet_rule:
            levels = torch.floor(torch.log2(size / self.s0 + self.eps))
        else:
            levels = torch.floor(self.lvl0 + torch.log2(size / self.s0) + self.eps)
        levels = torch.clamp(levels, min=self.k_min, max=self.k_max).to(torch.int64) - self.k_min
        first = features[self.names[0]]
        result = torch.zeros((rois.shape[0], first.shape[1], self.output_size[0], self.output_size[1]),
                             dtype=first.dtype, device=first.device)
        for level, (name, scale) in enumerate(zip(self.names, self.scales)):
            idx = torch.where(levels == level)[0]
            pooled = roi_align(features[name], rois[idx], self.output_size, spatial_scale=scale,
                               sampling_ratio=self.sampling_ratio, aligned=self.aligned)
            result = result.index_put((idx,), pooled)
        return result


def _inference_top_n(rpn: RegionProposalNetwork) -> tuple[int, int]:
    """The RPN's pre- and post-NMS top-n at inference (its public accessors answer for the module's mode)."""
    training = rpn.training
    rpn.eval()
    try:
        return int(rpn.pre_nms_top_n()), int(rpn.post_nms_top_n())
    finally:
        rpn.train(training)


class FasterRCNNGraph(DetectionGraph):
    """torchvision ``FasterRCNN`` inference: RPN (per-level top-k, per-level NMS, top post-NMS), RoIAlign on a
    fixed number of proposals per image (padding masked), class-wise NMS, top ``D``."""

    anchors: Tensor
    level_onehot: Tensor

    def __init__(self, model: FasterRCNN, image_size: tuple[int, int]) -> None:
        super().__init__(model, image_size)
        rpn, heads = model.rpn, model.roi_heads
        self.backbone = model.backbone
        self.rpn_head = rpn.head
        anchors, per_level, features = self.anchors_and_features(model.backbone, rpn.anchor_generator)
        self.register_buffer("anchors", anchors, persistent=False)
        pre_nms, post_nms = _inference_top_n(rpn)
        starts = [0]
        for n in per_level[:-1]:
            starts.append(starts[-1] + n)
        self.levels = [(s, n, min(pre_nms, n)) for s, n in zip(starts, per_level)]
        candidates = sum(k for _, _, k in self.levels)
        level_ids = torch.cat([torch.full((k,), i) for i, (_, _, k) in enumerate(self.levels)])
        self.register_buffer("level_onehot", level_ids[None, :] == torch.arange(len(self.levels))[:, None],
                             persistent=False)
        self.proposals = min(post_nms, candidates)
        self.rpn_weights = [float(w) for w in rpn.box_coder.weights]
        self.rpn_clip = float(rpn.box_coder.bbox_xform_clip)
        self.rpn_nms = float(rpn.nms_thresh)
        self.rpn_score = float(rpn.score_thresh)
        self.rpn_min_size = float(rpn.min_size)
        self.pool = BatchedRoIAlign(heads.box_roi_pool, features, self.resized)
        self.box_head = heads.box_head
        self.box_predictor = heads.box_predictor
        self.box_weights = [float(w) for w in heads.box_coder.weights]
        self.box_clip = float(heads.box_coder.bbox_xform_clip)
        self.score_thresh = float(heads.score_thresh)
        self.nms_thresh = float(heads.nms_thresh)
        self.detections = int(heads.detections_per_img)

    def propose(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        """``proposals [B, P, 4]`` and their validity ``[B, P]``."""
        objectness, deltas = self.rpn_head(features)
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        objectness = objectness.reshape(-1, self.anchors.shape[0])
        deltas = deltas.reshape(-1, self.anchors.shape[0], 4)
        top_l: list[Tensor] = []
        idx_l: list[Tensor] = []
        for start, count, k in self.levels:
            top, idx = objectness[:, start : start + count].topk(k, dim=1)
            top_l.append(top)
            idx_l.append(idx + start)
        idx = torch.cat(idx_l, dim=1)
        scores = torch.sigmoid(torch.cat(top_l, dim=1))
        boxes = decode_boxes(_gather_rows(deltas, idx), self.anchors[idx], self.rpn_weights, self.rpn_clip)
        boxes = clip_boxes(boxes, self.resized[0], self.resized[1])
        valid = ((boxes[..., 2] - boxes[..., 0]) >= self.rpn_min_size) & (
            (boxes[..., 3] - boxes[..., 1]) >= self.rpn_min_size) & (scores >= self.rpn_score)
        scores = mask_scores(scores, valid)
        per_level = mask_scores(scores.unsqueeze(1), self.level_onehot.unsqueeze(0))
        kept = keep_mask(self.nms(boxes, per_level, self.rpn_nms), list(per_level.shape)).any(dim=1)
        scores = mask_scores(scores, kept)
        top, idx = scores.topk(self.proposals, dim=1)
        return _gather_rows(boxes, idx), is_candidate(top)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        features = self.backbone(self.prepare(images))
        proposals, proposal_valid = self.propose(list(features.values()))
        count = proposals.shape[1]
        pooled = self.pool(features, proposals)
        class_logits, box_regression = self.box_predictor(self.box_head(pooled))
        num_classes = class_logits.shape[-1]
        boxes = decode_boxes(box_regression.reshape(-1, count, num_classes, 4), proposals.unsqueeze(2),
                             self.box_weights, self.box_clip)
        boxes = clip_boxes(boxes, self.resized[0], self.resized[1])[:, :, 1:]
        scores = F.softmax(class_logits, -1).reshape(-1, count, num_classes)[:, :, 1:]
        valid = (scores > self.score_thresh) & proposal_valid.unsqueeze(2) & (
            (boxes[..., 2] - boxes[..., 0]) >= 1e-2) & ((boxes[..., 3] - boxes[..., 1]) >= 1e-2)
        scores = mask_scores(scores, valid)
        # one NMS group per (image, class): [B * (K - 1), P] with the class's own boxes
        group_boxes = boxes.permute(0, 2, 1, 3).reshape(-1, count, 4)
        group_scores = scores.permute(0, 2, 1).reshape(-1, 1, count)
        kept = keep_mask(self.nms(group_boxes, group_scores, self.nms_thresh), list(group_scores.shape))
        scores = mask_scores(group_scores, kept)
        flat_scores = scores.reshape(-1, (num_classes - 1) * count)
        labels = torch.div(torch.arange(flat_scores.shape[1], device=scores.device), count,
                           rounding_mode="floor") + 1
        return self.finish(group_boxes.reshape(-1, (num_classes - 1) * count, 4), flat_scores,
                           labels.unsqueeze(0).expand_as(flat_scores), self.detections)


class FixedAdaptiveAvgPool2d(nn.Module):
    """``AdaptiveAvgPool2d`` for one known input size, as two averaging matrices: exact for bins that do not divide
    the input (PSPNet's 3 and 6 bins), which ONNX's exporter refuses."""

    rows: Tensor
    cols: Tensor

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int]) -> None:
        super().__init__()
        self.register_buffer("rows", self._weights(in_size[0], out_size[0]), persistent=False)
        self.register_buffer("cols", self._weights(in_size[1], out_size[1]), persistent=False)

    @staticmethod
    def _weights(n_in: int, n_out: int) -> Tensor:
        w = torch.zeros(n_out, n_in)
        for i in range(n_out):
            start, end = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)  # floor, ceil: PyTorch's bin edges
            w[i, start:end] = 1.0 / (end - start)
        return w

    def forward(self, x: Tensor) -> Tensor:
        return torch.matmul(torch.matmul(self.rows, x), self.cols.t())


def _fix_adaptive_pools(model: nn.Module, image_size: tuple[int, int]) -> nn.Module:
    """A copy of ``model`` whose adaptive average pools with non-dividing bins are :class:`FixedAdaptiveAvgPool2d`."""
    model = copy.deepcopy(model)
    seen: dict[str, tuple[int, int]] = {}
    pools = {n: m for n, m in model.named_modules() if isinstance(m, nn.AdaptiveAvgPool2d)}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: seen.__setitem__(n, tuple(inp[0].shape[-2:])))
             for n, m in pools.items()]
    with torch.no_grad():
        model(torch.zeros(1, 3, *image_size))
    for h in hooks:
        h.remove()
    for name, in_size in seen.items():
        out_size = _adaptive_out_size(pools[name].output_size, in_size)
        if in_size[0] % out_size[0] or in_size[1] % out_size[1]:
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name), attr, FixedAdaptiveAvgPool2d(in_size, out_size))
    return model


def _adaptive_out_size(out: int | None | tuple[int | None, int | None], in_size: tuple[int, int]
                       ) -> tuple[int, int]:
    """An adaptive pool's ``output_size`` for input ``in_size``: ``None`` keeps the input's side."""
    if isinstance(out, int):
        return out, out
    sides = (None, None) if out is None else out
    return sides[0] or in_size[0], sides[1] or in_size[1]


class SegmentationGraph(nn.Module):
    """A segmentation model taking ``[B, 3, H, W]`` on [0, 1] (it normalises itself) -> ``(labels, logits)``."""

    def __init__(self, model: nn.Module, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.model = _fix_adaptive_pools(model, image_size)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.model(images)["out"]
        return logits.argmax(dim=1), logits


def graph_for(model: nn.Module, image_size: tuple[int, int], task: str = DETECTION) -> nn.Module:
    """The export graph of ``model`` at ``image_size = (H, W)``."""
    _check_size(image_size)
    if task == SEGMENTATION:
        return SegmentationGraph(model, image_size).eval()
    if isinstance(model, FasterRCNN):
        return FasterRCNNGraph(model, image_size).eval()
    if isinstance(model, RetinaNet):
        return RetinaNetGraph(model, image_size).eval()
    if isinstance(model, YOLOX):
        return YoloxGraph(model, image_size).eval()
    from zoo.models.hf_detr import HfDetector

    if isinstance(model, HfDetector):
        from .detr import DetrGraph

        return DetrGraph(model, image_size).eval()
    raise ExportUnsupportedError(f"no export graph for {type(model).__name__}")


def _check_size(image_size: tuple[int, int]) -> None:
    if len(image_size) != 2 or min(image_size) < 32 or not all(isinstance(s, int) for s in image_size):
        raise ValueError(f"image size must be two integers >= 32 (height, width), got {image_size!r}")
    if math.prod(image_size) > 4096 * 4096:
        raise ValueError(f"image size {image_size} is too large to export")
