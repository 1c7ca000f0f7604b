"""Test-only references that the evaluation tests compare against. pycocotools is installed and run as is
(:func:`pycocotools_eval`); the other two are written here from the reference code's documented behaviour, loop for
loop, rather than imported (neither is a package):

- :func:`voc_eval`: py-faster-rcnn's ``voc_eval`` (``lib/datasets/voc_eval.py``, also detectron2's
  ``pascal_voc_evaluation.voc_eval``), for one class.
- :func:`citypersons_mr`: CityPersons' ``eval_MR_multisetup.py`` (``COCOeval.evaluate(id_setup)``, ``accumulate()``,
  ``summarize()``) on COCO-style dicts, with the CityPersons fork of ``COCO.loadRes`` (detection ids 1.., ``height``
  = bbox h).

One deliberate difference: ``voc_eval`` sorts detections with ``np.argsort(-confidence)``, whose order among equal
scores is not defined (NumPy's SIMD quicksort reorders ties even in 10 elements); here ties keep file order
(``kind="stable"``), which is what that sort gives whenever it leaves ties alone.
"""
from __future__ import annotations

import contextlib
import copy
import io
from collections import defaultdict

import numpy as np


def pycocotools_eval(gt: dict, dets: list[dict], cat_ids: list[int] | None = None,
                     max_dets: list[int] | None = None):
    """The reference, run the usual way (pycocotools mutates its inputs: give it copies)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "bbox")
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        if max_dets is not None:
            ev.params.maxDets = max_dets
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def voc_eval(class_recs: dict[str, dict], detections: list[tuple[str, float, list[float]]], ovthresh: float = 0.5,
             use_07_metric: bool = False) -> float:
    """AP of one class. ``class_recs[image]``: ``bbox`` [N, 4] xyxy, ``difficult`` [N] bool of that class;
    ``detections``: (image, confidence, xyxy) in file order."""
    recs = {k: {"bbox": np.asarray(r["bbox"], dtype=float).reshape(-1, 4),
                "difficult": np.asarray(r["difficult"], dtype=bool), "det": [False] * len(r["difficult"])}
            for k, r in class_recs.items()}
    npos = sum(int(np.sum(~r["difficult"])) for r in recs.values())
    image_ids = [d[0] for d in detections]
    confidence = np.array([d[1] for d in detections], dtype=float)
    bb_all = np.array([d[2] for d in detections], dtype=float).reshape(-1, 4)
    sorted_ind = np.argsort(-confidence, kind="stable")
    bb_all = bb_all[sorted_ind, :]
    image_ids = [image_ids[x] for x in sorted_ind]
    nd = len(image_ids)
    tp, fp = np.zeros(nd), np.zeros(nd)
    for d in range(nd):
        r = recs[image_ids[d]]
        bb = bb_all[d, :]
        ovmax = -np.inf
        bbgt = r["bbox"]
        if bbgt.size > 0:
            ixmin = np.maximum(bbgt[:, 0], bb[0])
            iymin = np.maximum(bbgt[:, 1], bb[1])
            ixmax = np.minimum(bbgt[:, 2], bb[2])
            iymax = np.minimum(bbgt[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
            ih = np.maximum(iymax - iymin + 1.0, 0.0)
            inters = iw * ih
            uni = ((bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0)
                   + (bbgt[:, 2] - bbgt[:, 0] + 1.0) * (bbgt[:, 3] - bbgt[:, 1] + 1.0) - inters)
            overlaps = inters / uni
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)
        if ovmax > ovthresh:
            if not r["difficult"][jmax]:
                if not r["det"][jmax]:
                    tp[d] = 1.0
                    r["det"][jmax] = True
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


HEIGHT_RANGES = [[50, 1e5**2], [50, 75], [50, 1e5**2], [20, 1e5**2]]
VISIBILITY_RANGES = [[0.65, 1e5**2], [0.65, 1e5**2], [0.2, 0.65], [0.2, 1e5**2]]
SETUP_NAMES = ["Reasonable", "Reasonable_small", "Reasonable_occ=heavy", "All"]
FPPI_THRESHOLDS = np.array([0.0100, 0.0178, 0.0316, 0.0562, 0.1000, 0.1778, 0.3162, 0.5623, 1.0000])


def _iou(dts: list, gts: list, crowd: list) -> np.ndarray:
    ious = np.zeros((len(dts), len(gts)))
    for j, g in enumerate(gts):
        gx1, gy1, gx2, gy2, garea = g[0], g[1], g[0] + g[2], g[1] + g[3], g[2] * g[3]
        for i, d in enumerate(dts):
            dx1, dy1, dx2, dy2, darea = d[0], d[1], d[0] + d[2], d[1] + d[3], d[2] * d[3]
            unionw = min(dx2, gx2) - max(dx1, gx1)
            if unionw <= 0:
                continue
            unionh = min(dy2, gy2) - max(dy1, gy1)
            if unionh <= 0:
                continue
            t = unionw * unionh
            unionarea = darea if crowd[j] else darea + garea - t
            ious[i, j] = float(t) / unionarea
    return ious


def _evaluate_image(gt: list[dict], dt: list[dict], hrng: list, max_det: int) -> dict | None:
    if len(gt) == 0 and len(dt) == 0:
        return None
    gt = [gt[i] for i in np.argsort([g["ignore"] for g in gt], kind="mergesort")]
    dt = [dt[i] for i in np.argsort([-d["score"] for d in dt], kind="mergesort")[0:max_det]]
    dt = [d for d in dt if hrng[0] / 1.25 <= d["height"] < hrng[1] * 1.25]
    ious = _iou([d["bbox"] for d in dt], [g["bbox"] for g in gt], [g["ignore"] for g in gt]) if dt else []
    gtm, dtm = np.zeros(len(gt)), np.zeros(len(dt))
    gt_ig = np.array([g["ignore"] for g in gt])
    dt_ig = np.zeros(len(dt))
    if len(ious):
        for dind, d in enumerate(dt):
            best_oa, bstg, bstm = min(0.5, 1 - 1e-10), -2, -2
            for gind in range(len(gt)):
                if gtm[gind] > 0:
                    continue
                if bstm != -2 and gt_ig[gind] == 1:
                    break
                if ious[dind, gind] < best_oa:
                    continue
                best_oa, bstg = ious[dind, gind], gind
                bstm = 1 if gt_ig[gind] == 0 else -1
            if bstg == -2:
                continue
            dt_ig[dind] = gt_ig[bstg]
            dtm[dind] = gt[bstg]["id"]
            if bstm == 1:
                gtm[bstg] = d["id"]
    return {"dtScores": [d["score"] for d in dt], "dtMatches": dtm, "dtIgnore": dt_ig, "gtIgnore": gt_ig}


def citypersons_mr(gt_json: dict, results: list[dict], id_setup: int, max_det: int = 1000) -> float:
    """MR^-2 of one official setup (0 Reasonable, 1 Reasonable_small, 2 Reasonable_occ=heavy, 3 All), -1 when
    undefined. ``gt_json``: COCO-style ``images`` and ``annotations`` (xywh ``bbox``, ``height``, ``vis_ratio``,
    ``ignore``, ``id``); ``results``: ``image_id``, xywh ``bbox``, ``score``."""
    hrng, vrng = HEIGHT_RANGES[id_setup], VISIBILITY_RANGES[id_setup]
    img_ids = sorted(img["id"] for img in gt_json["images"])
    gts, dts = defaultdict(list), defaultdict(list)
    for g in copy.deepcopy(gt_json["annotations"]):
        g["ignore"] = g.get("ignore", 0)
        out = (g["height"] < hrng[0] or g["height"] > hrng[1] or g["vis_ratio"] < vrng[0]
               or g["vis_ratio"] > vrng[1])
        g["ignore"] = 1 if out else g["ignore"]
        gts[g["image_id"]].append(g)
    for k, d in enumerate(copy.deepcopy(results)):
        d.update(id=k + 1, height=d["bbox"][3])
        dts[d["image_id"]].append(d)
    evals = [e for e in (_evaluate_image(gts[i], dts[i], hrng, max_det) for i in img_ids) if e is not None]
    if not evals:
        return -1.0
    dt_scores = np.concatenate([e["dtScores"][0:max_det] for e in evals])
    inds = np.argsort(-dt_scores, kind="mergesort")
    dtm = np.concatenate([e["dtMatches"][0:max_det] for e in evals])[inds]
    dt_ig = np.concatenate([e["dtIgnore"][0:max_det] for e in evals])[inds]
    gt_ig = np.concatenate([e["gtIgnore"] for e in evals])
    npig = np.count_nonzero(gt_ig == 0)
    if npig == 0:
        return -1.0
    keep = np.where(dt_ig == 0)[0]
    tp = np.cumsum(np.logical_and(dtm, np.logical_not(dt_ig))[keep]).astype(float)
    fp = np.cumsum(np.logical_and(np.logical_not(dtm), np.logical_not(dt_ig))[keep]).astype(float)
    fppi = fp / len(img_ids)
    recall = (tp / npig).tolist()
    for i in range(len(recall) - 1, 0, -1):  # kept from the COCO precision envelope; recall never decreases
        recall[i - 1] = min(recall[i - 1], recall[i])
    q = np.zeros(len(FPPI_THRESHOLDS)).tolist()
    try:
        for ri, pi in enumerate(np.searchsorted(fppi, FPPI_THRESHOLDS, side="right") - 1):
            q[ri] = recall[pi]
    except IndexError:  # no detections: the official's bare except leaves recall 0
        pass
    mrs = 1 - np.array(q)
    with np.errstate(divide="ignore"):
        return float(np.exp(np.mean(np.log(mrs))))
