"""Log-average miss rate (MR^-2) for pedestrian detection, CityPersons setups.

Definition followed: Dollár et al., "Pedestrian Detection: An Evaluation of the State of the Art" (PAMI 2012),
as implemented in the Caltech toolbox (``bbGt`` evalRes/compRoc, ``dbEval``) and used by CityPersons (Zhang et
al., CVPR 2017) with its setups (Reasonable: height >= 50 px, visibility >= 0.65):

1. A ground-truth box is ignored if flagged (ignore regions, non-pedestrian classes, crowds) or outside the setup's
   height/visibility ranges (bounds inclusive). Ignored boxes are kept for matching, not removed.
2. Detections whose height is outside [h_min / 1.25, h_max * 1.25] are dropped (the toolbox's expanded filter,
   so that a box just under 50 px is not counted as a false positive).
3. Per image, detections in descending score order take the not-yet-matched non-ignored box with the highest IoU
   >= 0.5 (the later box on ties, as the toolbox); failing that, a detection whose intersection over its own area (IoA) with any ignored box is >= 0.5
   is ignored (ignored boxes absorb any number of detections); otherwise it is a false positive.
4. Over all images, non-ignored detections sorted by score give FPPI = FP / #images and recall = TP / #non-ignored
   ground truth. For each of 9 FPPI references 10^k, k evenly spaced on [-2, 0], the miss rate is 1 - recall at
   the last operating point with FPPI <= the reference (1 if there is none).
5. MR^-2 = exp(mean(log(max(1e-10, miss rates)))). Boxes are continuous xyxy (no +1 pixel convention).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Setup:
    """Ground-truth height (px) and visibility ranges of an evaluation setup (bounds inclusive)."""

    height: tuple[float, float]
    visibility: tuple[float, float]


REASONABLE = Setup(height=(50.0, np.inf), visibility=(0.65, np.inf))
HEAVY_OCCLUSION = Setup(height=(50.0, np.inf), visibility=(0.2, 0.65))
ALL = Setup(height=(20.0, np.inf), visibility=(0.2, np.inf))
HEIGHT_MARGIN = 1.25


@dataclass(frozen=True)
class MissRateResult:
    """MR^-2 with the miss rate at each FPPI reference, and the full curve (FPPI, miss rate) in score order."""

    mr: float
    references: np.ndarray
    miss_rates: np.ndarray
    fppi: np.ndarray
    miss_rate_curve: np.ndarray


def _overlaps(dets: np.ndarray, gts: np.ndarray, ignore: np.ndarray) -> np.ndarray:
    """[D, G] IoU, or IoA (intersection over detection area) for ignored ground truth."""
    w = np.minimum(dets[:, None, 2], gts[None, :, 2]) - np.maximum(dets[:, None, 0], gts[None, :, 0])
    h = np.minimum(dets[:, None, 3], gts[None, :, 3]) - np.maximum(dets[:, None, 1], gts[None, :, 1])
    inter = np.clip(w, 0.0, None) * np.clip(h, 0.0, None)
    area_d = ((dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1]))[:, None]
    area_g = ((gts[:, 2] - gts[:, 0]) * (gts[:, 3] - gts[:, 1]))[None, :]
    union = np.where(ignore[None, :], area_d, area_d + area_g - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _match_image(d_boxes: np.ndarray, g_boxes: np.ndarray, g_ignore: np.ndarray,
                 iou_threshold: float) -> np.ndarray:
    """Per detection (score order): 1 TP, 0 FP, -1 ignored."""
    result = np.zeros(len(d_boxes), dtype=np.int8)
    if not len(g_boxes):
        return result
    ov = _overlaps(d_boxes, g_boxes, g_ignore)
    taken = np.zeros(len(g_boxes), dtype=bool)
    regular = ~g_ignore
    for i in range(len(d_boxes)):
        cand = regular & ~taken & (ov[i] >= iou_threshold)
        if cand.any():
            best = len(cand) - 1 - int(np.argmax(np.where(cand, ov[i], -1.0)[::-1]))  # ties: the later box
            taken[best] = True
            result[i] = 1
        elif (g_ignore & (ov[i] >= iou_threshold)).any():
            result[i] = -1
    return result


def log_average_miss_rate(
    ground_truth: Sequence[Mapping],
    detections: Sequence[Mapping],
    *,
    setup: Setup = REASONABLE,
    iou_threshold: float = 0.5,
    fppi_range: tuple[float, float] = (1e-2, 1e0),
    num_points: int = 9,
) -> MissRateResult:
    """MR^-2 over aligned per-image lists (lower is better).

    ``ground_truth[i]``: ``boxes`` [N, 4] xyxy (full body), optional ``visibility`` [N] (default 1) and
    ``ignore`` [N] bool. ``detections[i]``: ``boxes`` [M, 4] xyxy, ``scores`` [M].
    """
    if len(ground_truth) != len(detections):
        raise ValueError(f"{len(ground_truth)} ground-truth images but {len(detections)} detection images")
    if not ground_truth:
        raise ValueError("no images to evaluate")
    scores, labels, npos = [], [], 0
    h_lo, h_hi = setup.height
    for i, (g, d) in enumerate(zip(ground_truth, detections)):
        try:
            g_boxes = np.asarray(g["boxes"], dtype=np.float64).reshape(-1, 4)
            d_boxes = np.asarray(d["boxes"], dtype=np.float64).reshape(-1, 4)
            d_scores = np.asarray(d["scores"], dtype=np.float64).reshape(-1)
        except KeyError as e:
            raise ValueError(f"image {i}: ground truth needs boxes, detections boxes and scores ({e})") from e
        n = len(g_boxes)
        vis = np.asarray(g.get("visibility", np.ones(n)), dtype=np.float64).reshape(-1)
        flagged = np.asarray(g.get("ignore", np.zeros(n)), dtype=bool).reshape(-1)
        if len(vis) != n or len(flagged) != n or len(d_scores) != len(d_boxes):
            raise ValueError(f"image {i}: per-box fields have different lengths")
        height = g_boxes[:, 3] - g_boxes[:, 1]
        ignore = (flagged | (height < h_lo) | (height > h_hi) | (vis < setup.visibility[0])
                  | (vis > setup.visibility[1]))
        npos += int(np.count_nonzero(~ignore))
        d_height = d_boxes[:, 3] - d_boxes[:, 1]
        keep = np.flatnonzero((d_height >= h_lo / HEIGHT_MARGIN) & (d_height <= h_hi * HEIGHT_MARGIN))
        keep = keep[np.argsort(-d_scores[keep], kind="stable")]
        result = _match_image(d_boxes[keep], g_boxes, ignore, iou_threshold)
        scores.append(d_scores[keep][result >= 0])
        labels.append(result[result >= 0])
    if npos == 0:
        raise ValueError("no non-ignored ground truth in this setup: the miss rate is undefined")
    order = np.argsort(-np.concatenate(scores), kind="stable")
    tp = np.concatenate(labels)[order] == 1
    fppi = np.cumsum(~tp) / len(ground_truth)
    recall = np.cumsum(tp) / npos
    references = np.logspace(np.log10(fppi_range[0]), np.log10(fppi_range[1]), num_points)
    last = np.searchsorted(fppi, references, side="right") - 1  # last point with FPPI <= reference
    miss = np.ones(num_points)
    miss[last >= 0] = 1.0 - recall[last[last >= 0]]
    mr = float(np.exp(np.mean(np.log(np.maximum(1e-10, miss)))))
    return MissRateResult(mr, references, miss, fppi, 1.0 - recall)
