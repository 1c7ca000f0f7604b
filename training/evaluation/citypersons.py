"""Log-average miss rate (MR^-2) of pedestrian detectors, as CityPersons' official ``eval_MR_multisetup.py``.

CityPersons (Zhang et al., CVPR 2017) evaluates with a port of the Caltech toolbox (Dollár et al., PAMI 2012) onto
the COCO API. Its conventions, followed exactly by default:

1. A ground-truth box is ignored if flagged (labels other than "pedestrian", ignore regions) or outside the setup's
   height/visibility ranges (bounds inclusive). Ignored boxes are kept for matching.
2. Per image, the ``max_dets`` (1000) highest-scoring detections are kept (equal scores in input order), then
   those with height h in ``h_min / 1.25 <= h < h_max * 1.25``.
3. Detections in score order take the not-yet-matched non-ignored box with the highest IoU >= 0.5 (the later box on
   ties); failing that, an ignored box with intersection over the detection's area >= 0.5 makes the detection
   ignored (an ignored box absorbs any number); otherwise it is a false positive.
4. Over all images, non-ignored detections sorted by score (equal scores: image order, then rank) give FPPI =
   FP / #images and recall = TP / #non-ignored ground truth. At each FPPI reference of the 4-digit list 0.0100,
   0.0178, ..., 1.0000 recall is read at index ``searchsorted(fppi, reference, "right") - 1``: the last point with
   FPPI <= the reference, but index -1 (a reference below the first point's FPPI, i.e. before the first false
   positive when the first detection is one) reads the *last* recall of the curve; with no detections recall is 0.
5. MR^-2 = exp(mean(log(1 - recall))): 0 when a miss rate is 0 (no 1e-10 floor), and -1 when the setup has no
   non-ignored ground truth (official "undefined"). Boxes are continuous xyxy (no +1 pixel convention).

``corrected=True`` changes only point 4's index -1: such a reference reads recall 0 (miss rate 1), as no operating
point has FPPI <= it. Everything else stays official.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Setup:
    """An official evaluation setup: ground-truth height (px) and visibility ranges, bounds inclusive."""

    name: str
    height: tuple[float, float]
    visibility: tuple[float, float]


_NO_BOUND = 1e5**2  # the official upper bound of open ranges
REASONABLE = Setup("Reasonable", (50.0, _NO_BOUND), (0.65, _NO_BOUND))
REASONABLE_SMALL = Setup("Reasonable_small", (50.0, 75.0), (0.65, _NO_BOUND))
HEAVY_OCCLUSION = Setup("Reasonable_occ=heavy", (50.0, _NO_BOUND), (0.2, 0.65))
ALL = Setup("All", (20.0, _NO_BOUND), (0.2, _NO_BOUND))
SETUPS = (REASONABLE, REASONABLE_SMALL, HEAVY_OCCLUSION, ALL)
FPPI_REFERENCES = np.array([0.0100, 0.0178, 0.0316, 0.0562, 0.1000, 0.1778, 0.3162, 0.5623, 1.0000])
HEIGHT_MARGIN = 1.25
MAX_DETS = 1000


@dataclass(frozen=True)
class MissRateResult:
    """MR^-2 (-1 when undefined) with the miss rate at each FPPI reference (NaN when undefined), and the full curve
    (FPPI, miss rate) in score order."""

    setup: Setup
    mr: float
    miss_rates: np.ndarray
    fppi: np.ndarray
    miss_rate_curve: np.ndarray


def _overlaps(dets: np.ndarray, gts: np.ndarray, ignore: np.ndarray) -> np.ndarray:
    """[D, G] IoU, or IoA (intersection over detection area) for ignored ground truth."""
    w = np.minimum(dets[:, None, 2], gts[None, :, 2]) - np.maximum(dets[:, None, 0], gts[None, :, 0])
    h = np.minimum(dets[:, None, 3], gts[None, :, 3]) - np.maximum(dets[:, None, 1], gts[None, :, 1])
    overlap = (w > 0) & (h > 0)
    inter = w * h
    area_d = ((dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1]))[:, None]
    area_g = ((gts[:, 2] - gts[:, 0]) * (gts[:, 3] - gts[:, 1]))[None, :]
    union = np.where(ignore[None, :], area_d, area_d + area_g - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(overlap, inter / union, 0.0)


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


_Image = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _images(ground_truth: Sequence[Mapping], detections: Sequence[Mapping]) -> list[_Image]:
    """Per image: ground-truth boxes, visibility, ignore flags; detection boxes and scores sorted by score."""
    if len(ground_truth) != len(detections):
        raise ValueError(f"{len(ground_truth)} ground-truth images but {len(detections)} detection images")
    images = []
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
        order = np.argsort(-d_scores, kind="stable")
        images.append((g_boxes, vis, flagged, d_boxes[order], d_scores[order]))
    return images


def _miss_rate(images: list[_Image], setup: Setup, iou_threshold: float, max_dets: int,
               corrected: bool) -> MissRateResult:
    scores, labels, npos = [], [], 0
    (h_lo, h_hi), (v_lo, v_hi) = setup.height, setup.visibility
    for g_boxes, vis, flagged, all_boxes, all_scores in images:
        height = g_boxes[:, 3] - g_boxes[:, 1]
        ignore = flagged | (height < h_lo) | (height > h_hi) | (vis < v_lo) | (vis > v_hi)
        npos += int(np.count_nonzero(~ignore))
        d_boxes, d_scores = all_boxes[:max_dets], all_scores[:max_dets]
        d_height = d_boxes[:, 3] - d_boxes[:, 1]
        keep = (d_height >= h_lo / HEIGHT_MARGIN) & (d_height < h_hi * HEIGHT_MARGIN)
        result = _match_image(d_boxes[keep], g_boxes, ignore, iou_threshold)
        scores.append(d_scores[keep][result >= 0])
        labels.append(result[result >= 0])
    if npos == 0:
        return MissRateResult(setup, -1.0, np.full(len(FPPI_REFERENCES), np.nan), np.zeros(0), np.zeros(0))
    order = np.argsort(-np.concatenate(scores), kind="stable")
    tp = np.concatenate(labels)[order] == 1
    fppi = np.cumsum(~tp) / len(images)
    recall = np.cumsum(tp) / npos
    at = np.zeros(len(FPPI_REFERENCES))
    if len(recall):
        index = np.searchsorted(fppi, FPPI_REFERENCES, side="right") - 1
        at = np.where(index >= 0, recall[index], 0.0) if corrected else recall[index]
    miss = 1 - at
    mr = 0.0 if (miss == 0).any() else float(np.exp(np.mean(np.log(miss))))
    return MissRateResult(setup, mr, miss, fppi, 1 - recall)


def log_average_miss_rate(
    ground_truth: Sequence[Mapping],
    detections: Sequence[Mapping],
    *,
    setup: Setup = REASONABLE,
    iou_threshold: float = 0.5,
    max_dets: int = MAX_DETS,
    corrected: bool = False,
) -> MissRateResult:
    """MR^-2 of one setup over aligned per-image lists (lower is better; -1 when undefined).

    ``ground_truth[i]``: ``boxes`` [N, 4] xyxy (full body), optional ``visibility`` [N] (default 1) and
    ``ignore`` [N] bool. ``detections[i]``: ``boxes`` [M, 4] xyxy, ``scores`` [M].
    """
    return _miss_rate(_images(ground_truth, detections), setup, iou_threshold, max_dets, corrected)


def evaluate_citypersons(ground_truth: Sequence[Mapping], detections: Sequence[Mapping], *,
                         iou_threshold: float = 0.5, max_dets: int = MAX_DETS,
                         corrected: bool = False) -> dict[str, MissRateResult]:
    """MR^-2 of the four official setups, keyed by name: Reasonable, Reasonable_small, Reasonable_occ=heavy, All."""
    images = _images(ground_truth, detections)
    return {s.name: _miss_rate(images, s, iou_threshold, max_dets, corrected) for s in SETUPS}


def read_ground_truth(path: str | Path) -> dict[str, np.ndarray]:
    """One ``*_gtBboxCityPersons.json`` as evaluation ground truth: full-body ``boxes`` xyxy (not clipped),
    ``visibility`` (visible-box area / full-box area) and ``ignore`` (every label but "pedestrian"), as the official
    CityPersons evaluation annotations are made."""
    # training.data.citypersons._xyxy is the one parser of a CityPersons [x, y, w, h] field (it names a malformed
    # object); the data module keeps it private. tests/test_evaluation_cli.py's CityPersons run goes through it.
    from training.data.citypersons import LABELS, _xyxy

    path = Path(path)
    objects = json.loads(path.read_text()).get("objects")
    if not isinstance(objects, list):
        raise ValueError(f"{path}: no 'objects' list")
    boxes, visibility, ignore = [], [], []
    for i, obj in enumerate(objects):
        if obj.get("label") not in LABELS:
            raise ValueError(f"{path}: objects[{i}].label = {obj.get('label')!r}; expected one of {LABELS}")
        box = _xyxy(path, i, obj, "bbox")
        vis = _xyxy(path, i, obj, "bboxVis") if "bboxVis" in obj else box
        area = (box[2] - box[0]) * (box[3] - box[1])
        boxes.append(box)
        visibility.append((vis[2] - vis[0]) * (vis[3] - vis[1]) / area if area > 0 else 0.0)
        ignore.append(obj["label"] != "pedestrian")
    return {"boxes": np.array(boxes, dtype=np.float64).reshape(-1, 4), "visibility": np.array(visibility),
            "ignore": np.array(ignore, dtype=bool)}
