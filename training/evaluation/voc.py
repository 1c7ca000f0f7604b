"""PASCAL VOC detection mAP: VOC2007 11-point and VOC2010+ area (all-point) AP, difficult boxes ignored.

Matching follows the VOC devkit: detections of a class in descending score order (equal scores in input order:
image, then position in the image; ``voc_eval``'s ``np.argsort(-confidence)`` leaves them in no defined order);
each takes the ground-truth box of its image with the highest IoU (first on ties); IoU > threshold (strictly) on a
difficult box makes the detection neither TP nor FP, on a not-yet-matched box a TP, otherwise an FP. Boxes are xyxy
in inclusive pixel coordinates (width = x2 - x1 + 1) as in the devkit, unless ``inclusive_pixels=False``. Classes
without non-difficult ground truth have no AP and are left out of the mean (``voc_eval`` divides by zero there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

VOC07_RECALL_THRESHOLDS = np.arange(0.0, 1.1, 0.1)  # voc_eval's expression: 0.30000000000000004, ...


@dataclass(frozen=True)
class VocResult:
    """Per-class AP keyed by label, and their mean."""

    ap: dict[int, float]
    map: float


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = False) -> float:
    """AP from a precision/recall curve in detection order.

    07: mean over 11 recall thresholds of the best precision at recall >= the threshold (0 if none). The thresholds
    are ``np.arange(0.0, 1.1, 0.1)`` as in py-faster-rcnn's and detectron2's ``voc_eval``, whose floats exceed 0.3,
    0.6 and 0.7 (a recall of exactly 0.3 does not reach the fourth), summed as they do (``ap += p / 11``).
    Area: area under the precision envelope (precision made non-increasing from the right), summed where recall
    changes.
    """
    recall, precision = np.asarray(recall, dtype=np.float64), np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        ap = 0.0
        for t in VOC07_RECALL_THRESHOLDS:
            above = precision[recall >= t]
            ap += (above.max() if above.size else 0.0) / 11
        return float(ap)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _iou(box: np.ndarray, boxes: np.ndarray, offset: float) -> np.ndarray:
    """IoU of one xyxy box with [N, 4] boxes; ``offset`` 1 for inclusive pixel coordinates."""
    iw = np.maximum(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]) + offset, 0.0)
    ih = np.maximum(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]) + offset, 0.0)
    inter = iw * ih
    area_d = (box[2] - box[0] + offset) * (box[3] - box[1] + offset)
    area_g = (boxes[:, 2] - boxes[:, 0] + offset) * (boxes[:, 3] - boxes[:, 1] + offset)
    return inter / (area_d + area_g - inter)


def _arrays(item: Mapping, keys: Sequence[str], where: str) -> list[np.ndarray]:
    try:
        boxes = np.asarray(item["boxes"], dtype=np.float64).reshape(-1, 4)
        out = [boxes] + [np.asarray(item[k]).reshape(-1) for k in keys]
    except KeyError as e:
        raise ValueError(f"{where} needs boxes and {', '.join(keys)}: missing {e}") from e
    if any(len(a) != len(boxes) for a in out[1:]):
        raise ValueError(f"{where}: boxes and {', '.join(keys)} have different lengths")
    return out


def evaluate_voc(
    ground_truth: Sequence[Mapping],
    detections: Sequence[Mapping],
    *,
    iou_threshold: float = 0.5,
    use_07_metric: bool = False,
    inclusive_pixels: bool = True,
) -> VocResult:
    """VOC mAP over aligned per-image lists.

    ``ground_truth[i]``: ``boxes`` [N, 4] xyxy, ``labels`` [N], optional ``difficult`` [N] bool.
    ``detections[i]``: ``boxes`` [M, 4] xyxy, ``scores`` [M], ``labels`` [M].
    """
    if len(ground_truth) != len(detections):
        raise ValueError(f"{len(ground_truth)} ground-truth images but {len(detections)} detection images")
    offset = 1.0 if inclusive_pixels else 0.0
    gts, dts = [], []
    for i, (g, d) in enumerate(zip(ground_truth, detections)):
        g_boxes, g_labels = _arrays(g, ["labels"], f"ground truth of image {i}")
        difficult = np.asarray(g.get("difficult", np.zeros(len(g_boxes))), dtype=bool).reshape(-1)
        if len(difficult) != len(g_boxes):
            raise ValueError(f"ground truth of image {i}: difficult has a different length")
        gts.append((g_boxes, g_labels.astype(np.int64), difficult))
        d_boxes, d_scores, d_labels = _arrays(d, ["scores", "labels"], f"detections of image {i}")
        dts.append((d_boxes, d_scores.astype(np.float64), d_labels.astype(np.int64)))

    aps: dict[int, float] = {}
    for label in sorted({int(x) for _, labels, _ in gts for x in labels}):
        npos = sum(int(np.count_nonzero((labels == label) & ~diff)) for _, labels, diff in gts)
        if npos == 0:
            continue
        scores, is_tp, is_fp = [], [], []
        for (g_boxes, g_labels, diff), (d_boxes, d_scores, d_labels) in zip(gts, dts):
            gsel, dsel = g_labels == label, np.flatnonzero(d_labels == label)
            gb, gd = g_boxes[gsel], diff[gsel]
            dsel = dsel[np.argsort(-d_scores[dsel], kind="stable")]
            taken = np.zeros(len(gb), dtype=bool)
            tp, fp = np.zeros(len(dsel), dtype=bool), np.zeros(len(dsel), dtype=bool)
            for j, di in enumerate(dsel):
                if len(gb):
                    overlaps = _iou(d_boxes[di], gb, offset)
                    best = int(np.argmax(overlaps))
                    if overlaps[best] > iou_threshold:
                        if gd[best]:
                            continue
                        if not taken[best]:
                            taken[best] = tp[j] = True
                            continue
                fp[j] = True
            scores.append(d_scores[dsel])
            is_tp.append(tp)
            is_fp.append(fp)
        order = np.argsort(-np.concatenate(scores), kind="stable")
        tp_sum = np.cumsum(np.concatenate(is_tp)[order]).astype(np.float64)
        fp_sum = np.cumsum(np.concatenate(is_fp)[order]).astype(np.float64)
        recall = tp_sum / npos
        precision = tp_sum / np.maximum(tp_sum + fp_sum, np.finfo(np.float64).eps)
        aps[label] = voc_ap(recall, precision, use_07_metric)
    return VocResult(aps, float(np.mean(list(aps.values()))) if aps else float("nan"))
