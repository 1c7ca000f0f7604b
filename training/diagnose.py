"""Detection error breakdown as in the Objects365 paper's Fig. 8 (after Hoiem et al. and COCO's ``analyze()``).

Seven precision-recall curves, per category and overall (area "all", 100 detections per image), each removing one
more kind of error:

- C75, C50: PR at IoU .75 and .5;
- Loc: PR at IoU .1 (localisation errors ignored; duplicate detections still count as false positives, as COCO);
- Sim: also at IoU .1, detections on ground truth of another category of the same supercategory are removed;
- Oth: the same with every other category (all class confusions removed);
- BG: all background false positives removed (precision 1 up to Oth's recall);
- FN: all errors removed (precision 1 everywhere).

Sim and Oth follow COCO: the other categories' ground truth is added to the category evaluated as *ignored* boxes,
so a detection matching one (at IoU .1, after the category's own boxes) is left out of the curve. The ignored copies
are marked by an area beyond every area range (non-crowd boxes ignored by the range), which the fast evaluator
(:func:`training.evaluation.coco.evaluate_coco`) treats exactly as pycocotools treats an ignored box.

With ``--pictures DIR`` it also draws the images with the most errors (false positives plus false negatives at IoU
.5, detections scoring at least ``--score-threshold``, crowd regions as COCO) in the paper's Fig. 9 colours, with a
contact sheet worst first (:mod:`zoo.result_pictures`).

    python -m training diagnose PRED.json ANN.json [--json] [--plots DIR] [--pictures DIR [--images IMGDIR]
                                [--worst N] [--score-threshold S]]
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from zoo.result_pictures import PictureWriter, worst_first
from zoo.visualize import Comparison, compare

from .evaluation import coco
from .evaluation.coco import Detections, GroundTruth, evaluate_coco, load_detections, load_ground_truth

log = logging.getLogger(__name__)

CURVES = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
_IGNORED_AREA = 1e11  # beyond AREA_RANGES["all"]: the box is ignored in every range
_CHUNK = 32  # categories per evaluation (bounds the ignored copies held at once)


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """Interpolated precision ``[7 curves, 101 recall points, K]`` (-1: the category has no ground truth)."""

    precision: np.ndarray
    category_ids: tuple[int, ...]
    category_names: tuple[str, ...]
    supercategories: tuple[str, ...]
    recall50: np.ndarray  # [K]: recall at IoU .5 (-1 without ground truth)

    def ap(self, k: int | None = None) -> dict[str, float]:
        """Area under each curve (mean precision over the recall points), for category position ``k`` or the mean
        over categories with ground truth."""
        p = self.precision if k is None else self.precision[:, :, k:k + 1]
        valid = p[0, 0] > -1
        return {c: float(p[i][:, valid].mean()) if valid.any() else -1.0 for i, c in enumerate(CURVES)}

    def no_positive_match(self) -> list[str]:
        """Categories with ground truth of which no box is matched at IoU .5."""
        return [n for n, r in zip(self.category_names, self.recall50) if r == 0]

    def to_dict(self) -> dict[str, Any]:
        return {"curves": list(CURVES), "overall": self.ap(),
                "recall_thresholds": coco.RECALL_THRESHOLDS.tolist(),
                "overall_precision": {c: _mean_curve(self.precision[i]).tolist() for i, c in enumerate(CURVES)},
                "categories": [{"id": cid, "name": name, "supercategory": sup, **self.ap(k)} for k, (cid, name, sup)
                               in enumerate(zip(self.category_ids, self.category_names, self.supercategories))
                               if self.recall50[k] > -1],
                "no_ground_truth": [n for n, r in zip(self.category_names, self.recall50) if r == -1],
                "no_positive_match": self.no_positive_match()}

    def table(self, top: int = 10) -> str:
        """Overall areas under the curves, then the categories with the largest class-confusion gaps."""
        head = f"{'category':<32} " + " ".join(f"{c:>6}" for c in CURVES)
        row = lambda name, ap: f"{name[:32]:<32} " + " ".join(f"{100 * ap[c]:6.1f}" for c in CURVES)  # noqa: E731
        lines = [head, row("overall", self.ap())]
        rows = [(self.category_names[k], self.ap(k)) for k in np.flatnonzero(self.recall50 > -1).tolist()]
        rows.sort(key=lambda r: r[1]["Oth"] - r[1]["Loc"], reverse=True)
        if rows:
            lines += ["", f"largest class-confusion gaps (Oth - Loc), top {min(top, len(rows))}:", head]
            lines += [row(name, ap) for name, ap in rows[:top]]
        missing = self.no_positive_match()
        lines += ["", f"{len(missing)} categories with no positive match at IoU .5"
                  + (f": {', '.join(missing)}" if missing else "")]
        return "\n".join(lines)


def _mean_curve(p: np.ndarray) -> np.ndarray:
    """Mean over categories with ground truth of precision ``[R, K]``."""
    valid = p[0] > -1
    return p[:, valid].mean(axis=1) if valid.any() else np.zeros(len(p))


@contextlib.contextmanager
def _iou_thresholds(thresholds: Sequence[float]) -> Iterator[None]:
    """Evaluate at other IoU thresholds: the fast evaluator reads the module's thresholds when it runs."""
    saved = coco.IOU_THRESHOLDS
    coco.IOU_THRESHOLDS = np.asarray(thresholds, dtype=np.float64)
    try:
        yield
    finally:
        coco.IOU_THRESHOLDS = saved


def _with_ignored_copies(gt: GroundTruth, dt: Detections, chunk: np.ndarray, group: np.ndarray | None
                         ) -> GroundTruth:
    """``gt`` plus, for each category k of ``chunk`` and image where k is detected, an ignored copy (labelled k) of
    every box there of another category (of k's group when ``group`` maps category position -> group)."""
    n_img, n_cat = len(gt.image_ids), len(gt.category_ids)
    in_chunk = np.isin(dt.category, chunk)
    pairs = np.unique(dt.image[in_chunk] * n_cat + np.searchsorted(gt.category_ids, dt.category[in_chunk]))
    p_img, p_cat = pairs // n_cat, pairs % n_cat
    order = np.argsort(gt.image, kind="stable")
    g_count = np.bincount(gt.image, minlength=n_img)
    g_start = np.concatenate([[0], np.cumsum(g_count)[:-1]])
    rep = g_count[p_img]
    pair = np.repeat(np.arange(len(pairs)), rep)
    within = np.arange(rep.sum()) - np.repeat(np.cumsum(rep) - rep, rep)
    rows = order[g_start[p_img[pair]] + within]
    target = p_cat[pair]
    source = np.searchsorted(gt.category_ids, gt.category[rows])
    keep = source != target
    if group is not None:
        keep &= group[source] == group[target]
    rows, target = rows[keep], target[keep]
    extra = len(rows)
    if not extra:
        return gt
    return dataclasses.replace(
        gt, image=np.concatenate([gt.image, gt.image[rows]]),
        category=np.concatenate([gt.category, gt.category_ids[target]]),
        boxes=np.concatenate([gt.boxes, gt.boxes[rows]]),
        area=np.concatenate([gt.area, np.full(extra, _IGNORED_AREA)]),
        iscrowd=np.concatenate([gt.iscrowd, np.zeros(extra, dtype=bool)]),
        ann_ids=np.concatenate([gt.ann_ids, gt.ann_ids[rows]]))


def diagnose(gt: str | Path | Mapping[str, Any], detections: Any) -> Diagnosis:
    """The seven curves of the module docstring for ``detections`` (see :func:`load_detections`) against ``gt`` (a
    COCO JSON path or dict; its categories' ``supercategory`` fields define Sim)."""
    data: Mapping[str, Any]
    if isinstance(gt, Mapping):
        data = gt
    else:
        with open(gt) as f:
            data = json.load(f)
    supers = {c["id"]: c.get("supercategory") for c in data["categories"]}
    truth = load_ground_truth(data)
    dt = detections if isinstance(detections, Detections) else load_detections(detections, truth)
    cat_ids = truth.category_ids
    sup_names = tuple(str(supers[c]) if supers[c] is not None else "" for c in cat_ids.tolist())
    if not any(sup_names):
        log.warning("no 'supercategory' in the annotation file: Sim (supercategory confusions) equals Loc")
    # a category without a supercategory is its own group
    labels = [s if s else f"\0{i}" for i, s in enumerate(sup_names)]
    group = np.unique(labels, return_inverse=True)[1]

    K, R = len(cat_ids), len(coco.RECALL_THRESHOLDS)
    precision = np.full((len(CURVES), R, K), -1.0)
    with _iou_thresholds([0.75, 0.5, 0.1]):
        base = evaluate_coco(truth, dt, max_dets=(100,))
    precision[:3] = base.precision[:, :, :, 0, 0]
    recall50 = base.recall[1, :, 0, 0]
    with _iou_thresholds([0.1]):
        for lo in range(0, K, _CHUNK):
            chunk = cat_ids[lo:lo + _CHUNK]
            for curve, by in ((3, group), (4, None)):
                result = evaluate_coco(_with_ignored_copies(truth, dt, chunk, by), dt, categories=chunk.tolist(),
                                       max_dets=(100,))
                precision[curve, :, lo:lo + len(chunk)] = result.precision[0, :, :, 0, 0]
    has_gt = precision[0, 0] > -1
    precision[5] = np.where(has_gt, precision[4] > 0, -1.0)
    precision[6] = np.where(has_gt, 1.0, -1.0)
    return Diagnosis(precision, tuple(cat_ids.tolist()), truth.category_names, sup_names, recall50)


def comparisons(truth: GroundTruth, dt: Detections, score_threshold: float = 0.3, iou_threshold: float = 0.5
                ) -> dict[int, Comparison]:
    """Per image (index into ``truth.image_ids``) with ground truth or detections: detections scoring at least
    ``score_threshold`` matched to the ground truth (:func:`zoo.visualize.compare`, crowd regions as COCO); labels
    are category positions + 1 (``truth.category_names[label - 1]``)."""
    g = np.arange(len(truth.image))
    d = np.flatnonzero(dt.scores >= score_threshold)
    g, d = g[np.argsort(truth.image[g], kind="stable")], d[np.argsort(dt.image[d], kind="stable")]
    n = len(truth.image_ids)
    g_end, d_end = np.cumsum(np.bincount(truth.image[g], minlength=n)), np.cumsum(np.bincount(dt.image[d], minlength=n))
    g_label, d_label = (np.searchsorted(truth.category_ids, c) + 1 for c in (truth.category, dt.category))
    g_box, d_box = (np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1) for b in (truth.boxes, dt.boxes))
    drawn = np.flatnonzero((np.diff(g_end, prepend=0) > 0) | (np.diff(d_end, prepend=0) > 0)).tolist()
    out = {}
    for i in tqdm(drawn, desc="compare", unit="image", disable=None if len(drawn) > 1000 else True):
        gi, di = g[g_end[i - 1] if i else 0:g_end[i]], d[d_end[i - 1] if i else 0:d_end[i]]
        out[i] = compare(d_box[di], d_label[di], dt.scores[di], g_box[gi], g_label[gi], iou_threshold,
                         gt_crowd=truth.iscrowd[gi])
    return out


def write_pictures(truth: GroundTruth, dt: Detections, out: str | Path, *, images: str | Path | None = None,
                   worst: int = 20, score_threshold: float = 0.3) -> list[Path]:
    """Pictures of the ``worst`` images with the most errors (:func:`comparisons`, ranked by
    :func:`zoo.result_pictures.worst_first`) in ``out``, then the contact sheet; returns their paths. An image not
    found under ``images`` (or every image, without ``images``) is drawn on a grey canvas of its annotated size."""
    if worst < 1:
        raise ValueError(f"--worst must be at least 1, got {worst}")
    found = comparisons(truth, dt, score_threshold)
    if not found:
        raise ValueError("no image has ground truth or detections scoring at least the score threshold to draw")
    file_names = {i: str(truth.images[i].get("file_name", truth.image_ids[i])) for i in found}
    ranked = sorted(((file_names[i], i) for i in found), key=lambda item: worst_first((item[0], found[item[1]])))
    writer = PictureWriter(out, truth.category_names)
    written, absent = [], 0
    for file_name, i in ranked[:worst]:
        path = Path(images, file_name) if images is not None else None
        if path is not None and path.is_file():
            with Image.open(path) as image:
                picture = image.convert("RGB")
        else:
            absent += path is not None
            info = truth.images[i]
            size = (int(info.get("width") or 0), int(info.get("height") or 0))
            if not all(size):  # no size in the annotation: a canvas that holds every box
                c = found[i]
                corner = np.concatenate([c.gt_boxes[:, 2:], c.pred_boxes[:, 2:], [[1, 1]]]).max(axis=0)
                size = (int(np.ceil(corner[0])) + 1, int(np.ceil(corner[1])) + 1)
            picture = Image.new("RGB", size, (128, 128, 128))
        written.append(writer.add(Path(file_name).stem, picture, found[i]))
    if absent:
        log.warning("%d of the %d images are not under %s: drawn on a grey canvas", absent, len(written), images)
    return [*written, writer.write_sheet()]


def diagnose_cmd(pred: str, ann: str, *, as_json: bool = False, plots: str | None = None,
                 pictures: str | None = None, images: str | None = None, worst: int = 20,
                 score_threshold: float = 0.3) -> str:
    """What ``python -m training diagnose`` prints."""
    with open(ann) as f:
        gt = json.load(f)
    truth = load_ground_truth(gt)
    dt = load_detections(pred, truth)
    result = diagnose(gt, dt)
    out = result.to_dict()
    if plots:
        from .plots import plot_diagnosis

        out["figures"] = [str(p) for p in plot_diagnosis(result, plots)]
    if pictures:
        out["pictures"] = [str(p) for p in write_pictures(truth, dt, pictures, images=images, worst=worst,
                                                               score_threshold=score_threshold)]
    if as_json:
        return json.dumps(out, indent=2)
    text = result.table() + "".join(f"\nwrote {p}" for p in out.get("figures", []))
    if pictures:
        text += (f"\npictures of the {len(out['pictures']) - 1} images with the most errors (FP + FN at IoU .5, "
                 f"score >= {score_threshold:g}) in {pictures}, contact sheet {out['pictures'][-1]}")
    return text
