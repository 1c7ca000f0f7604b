"""Each metric against its reference on seeded random sweeps of adversarial cases: equal scores, crowd / ignore /
difficult ground truth, empty images, detections outside the image, duplicated boxes, values on the bounds.

References: pycocotools (installed) for COCO; for VOC and CityPersons the test-side ports in
``evaluation_references`` of py-faster-rcnn's ``voc_eval`` and CityPersons' ``eval_MR_multisetup.py``.
"""
from __future__ import annotations

import numpy as np
import pytest
from evaluation_references import SETUP_NAMES, citypersons_mr, pycocotools_eval, voc_eval

from training.evaluation.citypersons import SETUPS, evaluate_citypersons
from training.evaluation.coco import evaluate_coco, load_detections, load_ground_truth
from training.evaluation.voc import evaluate_voc

CASES = 200


def make_voc_case(rng: np.random.Generator) -> tuple[list[dict], list[dict]]:
    """Integer-pixel VOC boxes of labels 1-3 (4 only in detections); 10 or 20 boxes of a class in some cases, so
    that recalls of exactly 0.3, 0.6 and 0.7 occur."""
    gt, dets = [], []
    for _ in range(int(rng.integers(1, 6))):
        n = int(rng.choice([0, 1, 3, 5, 10]))
        boxes, labels, difficult = [], [], []
        for _ in range(n):
            x, y = rng.integers(0, 400, 2)
            w, h = rng.integers(5, 120, 2)
            boxes.append([x, y, x + w, y + h])
            labels.append(int(rng.integers(1, 4)) if rng.uniform() < 0.7 else 1)
            difficult.append(bool(rng.uniform() < 0.15))
            if rng.uniform() < 0.1:  # duplicated ground truth
                boxes.append(boxes[-1]), labels.append(labels[-1]), difficult.append(False)
        d_boxes, d_scores, d_labels = [], [], []
        for box, label in zip(boxes, labels):
            for _ in range(int(rng.choice([0, 1, 1, 2]))):
                jitter = rng.integers(-8, 9, 4) if rng.uniform() < 0.7 else rng.normal(0, 6, 4)
                d_boxes.append((np.array(box) + jitter).tolist())
                d_labels.append(label if rng.uniform() < 0.85 else int(rng.integers(1, 5)))
                d_scores.append(float(rng.choice([0.1, 0.5, 0.9])) if rng.uniform() < 0.4 else float(rng.uniform()))
        for _ in range(int(rng.integers(0, 4))):  # false positives, some outside the image
            x, y = rng.integers(-100, 600, 2)
            d_boxes.append([x, y, x + int(rng.integers(1, 90)), y + int(rng.integers(1, 90))])
            d_labels.append(int(rng.integers(1, 5)))
            d_scores.append(float(rng.choice([0.1, 0.5, 0.9])))
        if d_boxes and rng.uniform() < 0.3:  # a duplicated detection
            d_boxes.append(d_boxes[0]), d_labels.append(d_labels[0]), d_scores.append(d_scores[0])
        gt.append({"boxes": np.array(boxes, dtype=float).reshape(-1, 4), "labels": labels, "difficult": difficult})
        dets.append({"boxes": np.array(d_boxes, dtype=float).reshape(-1, 4), "scores": d_scores, "labels": d_labels})
    return gt, dets


def voc_reference(gt: list[dict], dets: list[dict], label: int, use_07_metric: bool) -> float:
    """``voc_eval`` on the case: images named by position, the class's detections in file order."""
    class_recs = {}
    for i, g in enumerate(gt):
        sel = np.asarray(g["labels"]) == label
        class_recs[str(i)] = {"bbox": g["boxes"][sel], "difficult": np.asarray(g["difficult"], dtype=bool)[sel]}
    lines = [(str(i), score, box.tolist()) for i, d in enumerate(dets)
             for box, score, lab in zip(d["boxes"], d["scores"], d["labels"]) if lab == label]
    return voc_eval(class_recs, lines, use_07_metric=use_07_metric)


@pytest.mark.parametrize("use_07_metric", [True, False])
def test_voc_equals_voc_eval_on_random_cases(use_07_metric: bool) -> None:
    rng = np.random.default_rng(17)
    compared = 0
    for case in range(CASES):
        gt, dets = make_voc_case(rng)
        ours = evaluate_voc(gt, dets, use_07_metric=use_07_metric)
        expected = {}
        for label in sorted({int(x) for g in gt for x in g["labels"]}):
            npos = sum(int(np.sum((np.asarray(g["labels"]) == label) & ~np.asarray(g["difficult"], dtype=bool)))
                       for g in gt)
            if npos:  # voc_eval divides by zero without positives; we leave the class out
                expected[label] = voc_reference(gt, dets, label, use_07_metric)
        assert ours.ap == expected, f"case {case}"
        compared += len(expected)
    assert compared > 300


def make_citypersons_case(rng: np.random.Generator) -> tuple[dict, list[dict], list[dict], list[dict]]:
    """A COCO-style CityPersons case (for the reference) and the same as per-image lists (for us). Coordinates on a
    quarter-pixel grid, so that xywh and xyxy hold the same numbers; heights and visibilities on the setups' bounds
    (20, 50, 75; 0.2, 0.65) and detection heights on the filter's (16, 40, 93.75)."""
    images, anns, results, gt, dets = [], [], [], [], []
    heights = [16.0, 19.75, 20.0, 25.0, 40.0, 49.75, 50.0, 62.5, 75.0, 75.25, 93.75, 94.0, 120.0, 300.0]
    visibilities = [0.1, 0.2, 0.35, 0.65, 0.8, 1.0]
    for image_id in range(1, int(rng.integers(1, 7)) + 1):
        images.append({"id": image_id})
        boxes, vis, ignore = [], [], []
        for _ in range(int(rng.choice([0, 0, 1, 3, 6]))):
            h = float(rng.choice(heights)) if rng.uniform() < 0.6 else float(rng.integers(60, 800)) / 4
            w = round(h * 0.41 * 4) / 4
            x, y = float(rng.integers(-200, 8200)) / 4, float(rng.integers(-100, 4000)) / 4
            v = float(rng.choice(visibilities)) if rng.uniform() < 0.6 else float(rng.uniform(0.05, 1))
            flag = int(rng.uniform() < 0.2)  # ignore regions and non-pedestrian labels
            anns.append({"id": len(anns) + 1, "image_id": image_id, "bbox": [x, y, w, h], "height": h,
                         "vis_ratio": v, "ignore": flag})
            boxes.append([x, y, x + w, y + h]), vis.append(v), ignore.append(bool(flag))
        d_boxes, d_scores = [], []
        for x1, y1, x2, y2 in boxes:
            for _ in range(int(rng.choice([0, 1, 1, 2]))):
                jx, jy, jw, jh = (rng.integers(-24, 25, 4) / 4).tolist()
                d_boxes.append([x1 + jx, y1 + jy, x2 - x1 + jw, y2 - y1 + jh])
        for _ in range(int(rng.integers(0, 5))):  # false positives, some outside the image or on the bounds
            h = float(rng.choice(heights))
            d_boxes.append([float(rng.integers(-400, 8400)) / 4, float(rng.integers(-200, 4200)) / 4,
                            round(h * 0.41 * 4) / 4, h])
        if d_boxes and rng.uniform() < 0.3:  # a duplicated detection
            d_boxes.append(list(d_boxes[-1]))
        for b in d_boxes:
            d_scores.append(float(rng.choice([0.3, 0.6, 0.9])) if rng.uniform() < 0.4 else float(rng.uniform()))
            results.append({"image_id": image_id, "bbox": b, "score": d_scores[-1]})
        gt.append({"boxes": np.array(boxes).reshape(-1, 4), "visibility": vis, "ignore": ignore})
        dets.append({"boxes": np.array([[x, y, x + w, y + h] for x, y, w, h in d_boxes]).reshape(-1, 4),
                     "scores": d_scores})
    return {"images": images, "annotations": anns}, results, gt, dets


def test_citypersons_equals_official_on_random_cases() -> None:
    assert [s.name for s in SETUPS] == SETUP_NAMES
    rng = np.random.default_rng(2017)
    seen = {"undefined": 0, "zero": 0, "other": 0}
    for case in range(CASES):
        gt_json, results, gt, dets = make_citypersons_case(rng)
        max_dets = 3 if case % 10 == 0 else 1000  # the per-image cap, where cases can reach it
        ours = evaluate_citypersons(gt, dets, max_dets=max_dets)
        for k, setup in enumerate(SETUPS):
            expected = citypersons_mr(gt_json, results, k, max_det=max_dets)
            assert ours[setup.name].mr == expected, f"case {case}, {setup.name}"
            seen["undefined" if expected == -1 else "zero" if expected == 0 else "other"] += 1
    assert min(seen.values()) > 20, seen


def make_coco_sweep_case(rng: np.random.Generator, image_ids: list[int]) -> tuple[dict, list[dict]]:
    """Small COCO cases: crowd boxes, empty images, detections partly or wholly outside the 100x80 image,
    duplicated detections, scores with ties."""
    anns, dets = [], []
    for image_id in image_ids:
        for _ in range(int(rng.choice([0, 1, 2, 4]))):
            w, h = rng.uniform(2, 60, 2)
            box = [float(rng.uniform(-10, 90)), float(rng.uniform(-10, 70)), float(w), float(h)]
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(rng.choice([1, 2])),
                         "bbox": box, "area": float(w * h), "iscrowd": int(rng.uniform() < 0.15)})
            for _ in range(int(rng.choice([0, 1, 2]))):
                b = (np.array(box) + rng.normal(0, 3, 4)).clip(0.5, None).tolist()
                dets.append({"image_id": image_id, "category_id": anns[-1]["category_id"], "bbox": b})
        for _ in range(int(rng.integers(0, 3))):
            dets.append({"image_id": image_id, "category_id": int(rng.choice([1, 2])),
                         "bbox": [float(rng.uniform(-50, 150)), float(rng.uniform(-50, 130)), 20.0, 30.0]})
        if dets and rng.uniform() < 0.3:
            dets.append(dict(dets[-1]))
    for d in dets:
        d["score"] = float(rng.choice([0.2, 0.5, 0.8])) if rng.uniform() < 0.5 else float(rng.uniform())
    gt = {"images": [{"id": i, "width": 100, "height": 80} for i in image_ids], "annotations": anns,
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    return gt, dets


def test_coco_equals_pycocotools_on_random_cases() -> None:
    rng = np.random.default_rng(365)
    for case in range(40):
        gt, dets = make_coco_sweep_case(rng, list(range(1, int(rng.integers(2, 6)))))
        if not dets:
            continue
        ref = pycocotools_eval(gt, dets)
        ours = evaluate_coco(gt, dets)
        np.testing.assert_allclose(ours.precision, ref.eval["precision"], rtol=0, atol=1e-12, err_msg=f"{case}")
        np.testing.assert_allclose(ours.recall, ref.eval["recall"], rtol=0, atol=1e-12, err_msg=f"{case}")


def test_coco_image_ids_near_2_63_stay_exact() -> None:
    # Neighbours that float64 cannot tell apart: all four round to 2^63, which does not even fit int64.
    ids = [2**63 - 1, 2**63 - 2, 2**63 - 513, 2**53 + 1]
    gt, dets = make_coco_sweep_case(np.random.default_rng(63), ids)
    ref = pycocotools_eval(gt, dets)
    for source in (dets, {k: [d[k] for d in dets] for k in ("image_id", "category_id", "bbox", "score")},
                   {"image_id": np.array([d["image_id"] for d in dets], dtype=np.int64),
                    "category_id": np.array([d["category_id"] for d in dets]),
                    "bbox": np.array([d["bbox"] for d in dets]), "score": np.array([d["score"] for d in dets])}):
        ours = evaluate_coco(gt, source)
        np.testing.assert_allclose(ours.precision, ref.eval["precision"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(list(ours.stats.values()), ref.stats, rtol=0, atol=1e-12)
    loaded = load_ground_truth(gt)
    assert loaded.image_ids.tolist() == sorted(ids)
    assert loaded.image_ids[load_detections(dets, loaded).image].tolist() == [d["image_id"] for d in dets]
    with pytest.raises(ValueError, match="2\\^53"):  # a float layout cannot carry such ids
        evaluate_coco(gt, np.array([[ids[0], 0, 0, 5, 5, 0.5, 1]], dtype=np.float64))
    with pytest.raises(ValueError, match="int64"):
        evaluate_coco(gt, [dict(dets[0], image_id=2**63)])
