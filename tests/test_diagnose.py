"""Error breakdown (training/diagnose.py): each error made on purpose lands in its own bucket."""
from __future__ import annotations

import json

import numpy as np
import pytest

from training.diagnose import CURVES, diagnose, diagnose_cmd

CATEGORIES = [{"id": 1, "name": "cat", "supercategory": "animal"}, {"id": 2, "name": "dog", "supercategory": "animal"},
              {"id": 3, "name": "car", "supercategory": "vehicle"}]
CAT = [0, 0, 40, 40]  # the cat's box (xywh) in every case
HALF = 51 / 101  # area under a curve of precision 1 up to recall .5, 0 after (101 recall points)


def _case(gt: list[tuple[int, list[float]]], dets: list[tuple[list[float], float]], categories=CATEGORIES) -> dict:
    """Curve areas of category 'cat' on one 200x200 image: ``gt`` (category id, xywh), cat detections (xywh, score)."""
    ann = {"images": [{"id": 1, "width": 200, "height": 200, "file_name": "a.jpg"}], "categories": categories,
           "annotations": [{"id": i + 1, "image_id": 1, "category_id": c, "bbox": b, "area": b[2] * b[3],
                            "iscrowd": 0} for i, (c, b) in enumerate(gt)]}
    result = diagnose(ann, [{"image_id": 1, "category_id": 1, "bbox": b, "score": s} for b, s in dets])
    return result.ap(0)


def _jumps(ap: dict[str, float]) -> dict[str, float]:
    """How much each curve adds over the one before it (C75 against 0)."""
    values = [ap[c] for c in CURVES]
    return {c: round(b - a, 6) for c, a, b in zip(CURVES, [0.0, *values], values) if round(b - a, 6)}


def test_correct_detection_is_perfect_at_every_threshold() -> None:
    assert _jumps(_case([(1, CAT)], [(CAT, 0.9)])) == {"C75": 1.0}


def test_loose_box_between_iou_50_and_75_raises_only_c50() -> None:
    assert _jumps(_case([(1, CAT)], [([0, 0, 40, 24], 0.9)])) == {"C50": 1.0}  # IoU .6


def test_localisation_error_raises_only_loc() -> None:
    ap = _case([(1, CAT), (1, [100, 100, 40, 40])], [(CAT, 0.9), ([100, 100, 40, 12], 0.8)])  # IoU .3
    assert _jumps(ap) == {"C75": pytest.approx(HALF), "Loc": pytest.approx(1 - HALF)}


def test_supercategory_confusion_raises_only_sim() -> None:
    dog = [100, 100, 40, 40]
    ap = _case([(1, CAT), (2, dog)], [(dog, 0.95), (CAT, 0.9)])
    assert _jumps(ap) == {"C75": 0.5, "Sim": 0.5}


def test_other_class_confusion_raises_only_oth() -> None:
    car = [100, 100, 40, 40]
    ap = _case([(1, CAT), (3, car)], [(car, 0.95), (CAT, 0.9)])
    assert _jumps(ap) == {"C75": 0.5, "Oth": 0.5}


def test_background_false_positive_raises_only_bg() -> None:
    ap = _case([(1, CAT), (3, [100, 100, 40, 40])], [([150, 10, 40, 40], 0.95), (CAT, 0.9)])
    assert _jumps(ap) == {"C75": 0.5, "BG": 0.5}


def test_duplicate_stays_a_false_positive_until_bg() -> None:
    ap = _case([(1, CAT)], [(CAT, 0.9), (CAT, 0.8), ([100, 100, 40, 40], 0.7)])
    assert _jumps(ap) == {"C75": 1.0}  # the duplicate and the miss come after the only recall point
    ap = _case([(1, CAT), (1, [100, 100, 40, 40])], [(CAT, 0.9), (CAT, 0.8), ([100, 100, 40, 40], 0.7)])
    assert ap["Oth"] == pytest.approx(HALF + (1 - HALF) * 2 / 3) and ap["BG"] == 1.0


def test_missed_box_raises_only_fn() -> None:
    ap = _case([(1, CAT), (1, [100, 100, 40, 40])], [(CAT, 0.9)])
    assert _jumps(ap) == {"C75": pytest.approx(HALF), "FN": pytest.approx(1 - HALF)}


def test_without_supercategories_sim_equals_loc() -> None:
    dog = [100, 100, 40, 40]
    plain = [{"id": c["id"], "name": c["name"]} for c in CATEGORIES]
    assert _jumps(_case([(1, CAT), (2, dog)], [(dog, 0.95), (CAT, 0.9)], plain)) == {"C75": 0.5, "Oth": 0.5}


def test_command_json_lists_categories_without_match_and_writes_figures(tmp_path) -> None:
    ann = {"images": [{"id": 1, "width": 200, "height": 200, "file_name": "a.jpg"}], "categories": CATEGORIES,
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": CAT, "area": 1600, "iscrowd": 0},
                           {"id": 2, "image_id": 1, "category_id": 2, "bbox": [100, 100, 40, 40], "area": 1600,
                            "iscrowd": 0}]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    (tmp_path / "pred.json").write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": CAT, "score": 0.9}]))
    out = json.loads(diagnose_cmd(str(tmp_path / "pred.json"), str(tmp_path / "ann.json"), as_json=True,
                                  plots=str(tmp_path / "figs")))
    assert out["no_positive_match"] == ["dog"] and out["no_ground_truth"] == ["car"]
    assert [c["name"] for c in out["categories"]] == ["cat", "dog"]
    assert out["overall"]["C75"] == pytest.approx(0.5) and out["overall"]["FN"] == 1.0
    assert np.allclose(out["overall_precision"]["FN"], 1.0)
    assert all((tmp_path / "figs" / f).stat().st_size > 0 for f in ("diagnose_overall.png",
                                                                       "diagnose_categories.png"))


def test_cli_prints_the_table(tmp_path, capsys) -> None:
    from training.cli import main

    ann = {"images": [{"id": 1, "width": 200, "height": 200, "file_name": "a.jpg"}], "categories": CATEGORIES,
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": CAT, "area": 1600, "iscrowd": 0}]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    (tmp_path / "pred.json").write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": CAT, "score": 0.9}]))
    assert main(["diagnose", str(tmp_path / "pred.json"), str(tmp_path / "ann.json")]) == 0
    assert "overall" in capsys.readouterr().out


def _pycocotools_precision(ann: dict, dets: list[dict], iou: list[float], copies_of=None) -> np.ndarray:
    """pycocotools' interpolated precision [T, R, K] (area all, 100 detections); ``copies_of(k, c)``: add each box
    of category c as an ignored box of k (area beyond every range), one category at a time as COCO's analyze()."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = []
    for cat in [c["id"] for c in ann["categories"]]:
        extra = [] if copies_of is None else [
            {**a, "id": 1000 + a["id"], "category_id": cat, "area": 1e11} for a in ann["annotations"]
            if a["category_id"] != cat and copies_of(cat, a["category_id"])]
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO()
            gt.dataset = {**ann, "annotations": ann["annotations"] + extra}
            gt.createIndex()
            ev = COCOeval(gt, gt.loadRes(dets), "bbox")
            ev.params.catIds, ev.params.iouThrs, ev.params.maxDets = [cat], np.array(iou), [100]
            ev.evaluate()
            ev.accumulate()
        out.append(ev.eval["precision"][:, :, 0, 0, 0])
    return np.stack(out, axis=-1)


def test_matches_pycocotools_with_ignored_copies_on_random_data() -> None:
    rng = np.random.default_rng(3)
    categories = [{"id": i + 1, "name": f"c{i}", "supercategory": "ab"[i % 2]} for i in range(5)]
    images, annotations, dets = [], [], []
    for img in range(1, 9):
        images.append({"id": img, "width": 300, "height": 300, "file_name": f"{img}.jpg"})
        for _ in range(rng.integers(0, 6)):
            x, y, w, h = rng.uniform(0, 200, 2).tolist() + rng.uniform(10, 90, 2).tolist()
            annotations.append({"id": len(annotations) + 1, "image_id": img, "category_id": int(rng.integers(1, 6)),
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
            for _ in range(rng.integers(0, 4)):  # jittered, sometimes relabelled copies: every error kind
                jitter = (rng.normal(0, 0.25, 4) * [w, h, w, h]).tolist()
                dets.append({"image_id": img, "category_id": int(rng.integers(1, 6)), "score": float(rng.random()),
                             "bbox": [x + jitter[0], y + jitter[1], max(w + jitter[2], 1), max(h + jitter[3], 1)]})
        dets += [{"image_id": img, "category_id": int(rng.integers(1, 6)), "score": float(rng.random()),
                  "bbox": rng.uniform(0, 250, 2).tolist() + rng.uniform(5, 50, 2).tolist()} for _ in range(3)]
    ann = {"images": images, "annotations": annotations, "categories": categories}
    result = diagnose(ann, dets)
    same = lambda k, c: categories[k - 1]["supercategory"] == categories[c - 1]["supercategory"]  # noqa: E731
    expected = np.concatenate([_pycocotools_precision(ann, dets, [0.75, 0.5, 0.1]),
                               _pycocotools_precision(ann, dets, [0.1], same),
                               _pycocotools_precision(ann, dets, [0.1], lambda k, c: True)])
    assert np.allclose(result.precision[:5], expected)
    assert (result.precision[3] != result.precision[2]).any() and (result.precision[4] != result.precision[3]).any()
