"""Evaluation metrics: COCO mAP against pycocotools, VOC / MR^-2 / mIoU on hand-computed cases, gathering."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from evaluation_references import pycocotools_eval

from training import distributed
from training.evaluation.citypersons import evaluate_citypersons, log_average_miss_rate
from training.evaluation.coco import evaluate_coco, load_detections, load_ground_truth, results_from_outputs
from training.evaluation.segmentation import ConfusionMatrix
from training.evaluation.voc import evaluate_voc

REPO = Path(__file__).resolve().parents[1]
CATEGORIES = [(1, "person"), (2, "car"), (5, "dog"), (7, "cup"), (9, "kite"), (11, "absent")]


def make_coco_fixture(seed: int, first_ann_id: int = 1) -> tuple[dict, list[dict]]:
    """Random but seeded COCO ground truth and results with the cases pycocotools treats specially.

    Non-contiguous image/category ids; empty images; images with ground truth but no detections and the reverse;
    crowd boxes; area fields that differ from the box area, some exactly on the 32^2 / 96^2 bounds; duplicated
    ground-truth boxes and a det with equal IoU to two boxes (IoU ties: the later box wins); scores rounded to 2
    decimals (score ties); one (image, category) with 130 detections (beyond maxDets 100); category 11 has
    detections but no ground truth, category 9 no detections.
    """
    rng = np.random.default_rng(seed)
    images = [{"id": 7 + 3 * i, "width": 320, "height": 240} for i in range(36)]
    anns, dets = [], []
    gt_cats = [1, 2, 5, 7, 9]

    def box(scale: float) -> list[float]:
        w, h = rng.uniform(0.3, 1.0, 2) * scale
        return [float(rng.uniform(0, 320 - w)), float(rng.uniform(0, 240 - h)), float(w), float(h)]

    for i, img in enumerate(images):
        n_gt = 0 if i % 9 == 0 else int(rng.poisson(4))
        for _ in range(n_gt):
            b = box(float(rng.choice([20.0, 60.0, 150.0])))
            area = b[2] * b[3] * float(rng.uniform(0.6, 1.0))
            if rng.uniform() < 0.1:
                area = float(rng.choice([32.0**2, 96.0**2]))
            ann = {"image_id": img["id"], "category_id": int(rng.choice(gt_cats)), "bbox": b, "area": area,
                   "iscrowd": int(rng.uniform() < 0.1)}
            anns.append(ann)
            if rng.uniform() < 0.1:
                anns.append(dict(ann, bbox=list(b)))
        if i % 9 == 4:
            continue  # ground truth, no detections
        for ann in [a for a in anns if a["image_id"] == img["id"]]:
            for _ in range(int(rng.integers(0, 3))):
                jitter = rng.normal(0, 0.1, 4) * np.array([ann["bbox"][2], ann["bbox"][3]] * 2)
                b = (np.array(ann["bbox"]) + jitter).clip(0.5).tolist()
                cat = ann["category_id"] if rng.uniform() < 0.8 else int(rng.choice([1, 2, 5, 7, 11]))
                dets.append({"image_id": img["id"], "category_id": cat, "bbox": b, "score": float(rng.uniform())})
        for _ in range(int(rng.integers(0, 8))):
            dets.append({"image_id": img["id"], "category_id": int(rng.choice([1, 2, 5, 7, 11])),
                         "bbox": box(float(rng.choice([20.0, 60.0, 150.0]))), "score": float(rng.uniform(0, 0.6))})
    tie = {"id": 1000, "width": 320, "height": 240}  # det 1 has the same IoU (9/11) with both boxes
    images.append(tie)
    anns += [{"image_id": 1000, "category_id": 2, "bbox": b, "area": 100.0, "iscrowd": 0}
             for b in ([0.0, 0.0, 10.0, 10.0], [2.0, 0.0, 10.0, 10.0])]
    dets += [{"image_id": 1000, "category_id": 2, "bbox": b, "score": s}
             for b, s in (([1.0, 0.0, 10.0, 10.0], 0.9), ([0.0, 0.0, 10.0, 10.0], 0.8))]
    crowded = images[1]["id"]
    for _ in range(130):
        dets.append({"image_id": crowded, "category_id": 1, "bbox": box(60.0), "score": float(rng.uniform())})
    for k, ann in enumerate(anns):
        ann["id"] = first_ann_id + k
    for d in dets:
        d["score"] = round(d["score"], 2)
    gt = {"images": images, "annotations": anns, "categories": [{"id": c, "name": n} for c, n in CATEGORIES]}
    return gt, dets


@pytest.mark.parametrize("seed,first_ann_id", [(0, 1), (1, 1), (2, 0)])
def test_coco_equals_pycocotools(seed: int, first_ann_id: int) -> None:
    gt, dets = make_coco_fixture(seed, first_ann_id)  # first_ann_id 0: pycocotools counts a match to id 0 as none
    ref = pycocotools_eval(gt, dets)
    ours = evaluate_coco(gt, dets)
    assert ours.precision.shape == ref.eval["precision"].shape
    np.testing.assert_allclose(ours.precision, ref.eval["precision"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.recall, ref.eval["recall"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(list(ours.stats.values()), ref.stats, rtol=0, atol=1e-6)
    assert (ours.precision[:, :, ours.category_ids.index(11)] == -1).all()  # no ground truth
    assert ours.stats["AP"] > 0.1


def test_coco_library_backends_agree() -> None:
    gt, dets = make_coco_fixture(3)
    ours = evaluate_coco(gt, dets)
    for backend in ("pycocotools", "faster-coco-eval"):
        other = evaluate_coco(gt, dets, backend=backend, chunk_size=2)
        np.testing.assert_allclose(other.precision, ours.precision, rtol=0, atol=1e-6, err_msg=backend)
        np.testing.assert_allclose(other.recall, ours.recall, rtol=0, atol=1e-6, err_msg=backend)


def test_coco_custom_max_dets_uses_last_for_ap() -> None:
    gt, dets = make_coco_fixture(4)
    ref = pycocotools_eval(gt, dets, max_dets=[1, 3, 20])
    ours = evaluate_coco(gt, dets, max_dets=(1, 3, 20))
    np.testing.assert_allclose(ours.precision, ref.eval["precision"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.recall, ref.eval["recall"], rtol=0, atol=1e-6)
    p = ref.eval["precision"][:, :, :, 0, -1]
    assert ours.stats["AP"] == pytest.approx(np.mean(p[p > -1]), abs=1e-12)
    assert ref.stats[0] == -1  # summarize() looks for maxDets 100, which is not there
    assert set(ours.stats) >= {"AR1", "AR3", "AR20"}


def test_coco_chunked_equals_unchunked() -> None:
    gt, dets = make_coco_fixture(5)
    whole = evaluate_coco(gt, dets, chunk_size=None)
    for size in (1, 2, 4):
        part = evaluate_coco(gt, dets, chunk_size=size)
        assert np.array_equal(part.precision, whole.precision)
        assert np.array_equal(part.recall, whole.recall)


def test_coco_category_subset() -> None:
    gt, dets = make_coco_fixture(6)
    full = evaluate_coco(gt, dets)
    by_name = evaluate_coco(gt, dets, categories=["dog", "person", "absent"])
    assert by_name.category_ids == (1, 5, 11)
    sub = full.subset([5, 1, 11])
    assert np.array_equal(by_name.precision, sub.precision) and by_name.stats == sub.stats
    ref = pycocotools_eval(gt, dets, cat_ids=[1, 5, 11])
    np.testing.assert_allclose(by_name.precision, ref.eval["precision"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(list(by_name.stats.values()), ref.stats, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="unknown category name"):
        evaluate_coco(gt, dets, categories=["zebra"])


def test_coco_inputs_and_table(tmp_path: Path) -> None:
    gt, dets = make_coco_fixture(7)
    ref = evaluate_coco(gt, dets)
    array = np.array([[d["image_id"], *d["bbox"], d["score"], d["category_id"]] for d in dets])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    np.save(tmp_path / "dets.npy", array)
    columns = {"image_id": array[:, 0], "bbox": array[:, 1:5], "score": array[:, 5], "category_id": array[:, 6]}
    for source in (array, columns, tmp_path / "dets.json", tmp_path / "dets.npy"):
        assert np.array_equal(evaluate_coco(tmp_path / "gt.json", source).precision, ref.precision)
    rows = {row["name"]: row for row in ref.per_category()}
    assert rows["absent"]["AP"] == -1 and 0 < rows["person"]["AP"] <= 1
    assert "person" in ref.table() and len(ref.table().splitlines()) == len(CATEGORIES) + 1


def test_results_from_model_outputs() -> None:
    gt, dets = make_coco_fixture(9)
    ids = [c for c, _ in CATEGORIES]
    per_image: dict[int, list[dict]] = {}
    for d in dets:
        per_image.setdefault(d["image_id"], []).append(d)
    outputs = [{"boxes": torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in ds)],
                                      dtype=torch.float64),
                "scores": torch.tensor([d["score"] for d in ds], dtype=torch.float64),
                "labels": torch.tensor([ids.index(d["category_id"]) + 1 for d in ds])} for ds in per_image.values()]
    columns = results_from_outputs(list(per_image), outputs, ids)
    ours, ref = evaluate_coco(gt, columns), evaluate_coco(gt, dets)
    np.testing.assert_allclose(ours.precision, ref.precision, atol=1e-6)  # xywh -> xyxy -> xywh rounding
    with pytest.raises(ValueError, match="background"):
        results_from_outputs([1], [{"boxes": [[0, 0, 1, 1]], "scores": [1.0], "labels": [0]}], ids)


def test_coco_no_detections_and_bad_input() -> None:
    gt, dets = make_coco_fixture(8)
    empty = evaluate_coco(gt, [])
    assert empty.stats["AP"] == 0.0 and empty.stats["AR100"] == 0.0
    with pytest.raises(ValueError, match="image id"):
        evaluate_coco(gt, [dict(dets[0], image_id=999)])
    with pytest.raises(ValueError, match="category id"):
        evaluate_coco(gt, [dict(dets[0], category_id=0)])
    with pytest.raises(ValueError, match=r"\[N, 7\]"):
        evaluate_coco(gt, np.zeros((3, 6)))
    with pytest.raises(ValueError, match="finite"):
        evaluate_coco(gt, [dict(dets[0], score=float("nan"))])
    with pytest.raises(ValueError, match="backend"):
        evaluate_coco(gt, dets, backend="detectron2")
    with pytest.raises(ValueError, match="COCO dict"):
        load_ground_truth({"images": []})
    gtd = load_ground_truth(gt)
    assert len(load_detections(dets, gtd).scores) == len(dets)


def test_voc_hand_computed() -> None:
    # Class 1 (npos 3: g1, g3, g4; g2 difficult). Detections by score: d1 TP (g1), d2 on difficult g2 -> ignored,
    # d3 TP (g3), d4 FP (g1 taken), d5 FP (no overlap), d6 TP (g4). Kept: TP TP FP FP TP
    #   recall 1/3 2/3 2/3 2/3 1, precision 1 1 2/3 1/2 3/5.
    #   area: envelope 1 1 1 2/3 3/5 3/5 -> AP = 1/3*1 + 1/3*1 + 1/3*3/5 = 13/15.
    #   07: t = 0..0.3 -> 1 (4x), t = 0.4..0.6 -> 1 (3x), t = 0.7..1.0 -> 3/5 (4x): AP = 9.4/11.
    # Class 2 (npos 2): TP, then IoU exactly 0.5 (100 / 200) -> FP (the devkit needs IoU > 0.5).
    #   recall 1/2 1/2, precision 1 1/2: area AP = 1/2; 07: t = 0..0.5 -> 1 (6x) -> 6/11.
    # Class 3 has only a difficult box and label 4 only detections: no AP for either.
    gt = [
        {"boxes": [[0, 0, 9, 9], [20, 20, 29, 29], [30, 30, 39, 39], [60, 60, 69, 69]], "labels": [1, 1, 2, 3],
         "difficult": [False, True, False, True]},
        {"boxes": [[0, 0, 9, 9], [50, 50, 59, 59], [0, 0, 9, 19]], "labels": [1, 1, 2]},
    ]
    dets = [
        {"boxes": [[0, 0, 9, 9], [20, 20, 29, 29], [0, 0, 9, 9], [30, 30, 39, 44], [80, 80, 90, 90]],
         "scores": [0.9, 0.8, 0.6, 0.9, 0.3], "labels": [1, 1, 1, 2, 4]},
        {"boxes": [[0, 0, 9, 9], [100, 100, 109, 109], [50, 50, 59, 59], [0, 0, 9, 9]],
         "scores": [0.7, 0.5, 0.4, 0.8], "labels": [1, 1, 1, 2]},
    ]
    area = evaluate_voc(gt, dets)
    assert area.ap == pytest.approx({1: 13 / 15, 2: 1 / 2}, abs=1e-12)
    assert area.map == pytest.approx((13 / 15 + 1 / 2) / 2, abs=1e-12)
    v07 = evaluate_voc(gt, dets, use_07_metric=True)
    assert v07.ap == pytest.approx({1: 9.4 / 11, 2: 6 / 11}, abs=1e-12)
    with pytest.raises(ValueError, match="different lengths"):
        evaluate_voc([{"boxes": [[0, 0, 1, 1]], "labels": [1, 2]}], [{"boxes": [], "scores": [], "labels": []}])


def test_citypersons_miss_rate_hand_computed() -> None:
    # Image 1: p1 counted; p2 too short (40 px) and p3 too occluded (0.3) are ignored; r is an ignore region.
    # Image 2: p4 and p5 counted -> 3 non-ignored boxes.
    # Detections: e (30 px < 50 / 1.25) dropped; a TP (p1); b inside region r (IoA 1) ignored; c on ignored p2
    # ignored; d FP; f TP (p4); g FP. Kept in score order: a TP, d FP, f TP, g FP
    #   FPPI (2 images) 0, 0.5, 0.5, 1.0; recall 1/3, 1/3, 2/3, 2/3.
    # References 0.0100 ... 1.0000 (9): the 7 below 0.5 see FPPI 0 (miss 2/3); 0.5623 and 1.0 see miss 1/3.
    gt = [
        {"boxes": [[0, 0, 40, 100], [100, 0, 120, 40], [200, 0, 240, 100], [300, 0, 400, 100]],
         "visibility": [1.0, 1.0, 0.3, 1.0], "ignore": [False, False, False, True]},
        {"boxes": [[0, 0, 30, 80], [200, 0, 240, 100]], "visibility": [0.9, 1.0]},
    ]
    dets = [
        {"boxes": [[0, 0, 40, 100], [300, 0, 340, 60], [100, 0, 120, 40], [500, 0, 540, 100], [600, 0, 610, 30]],
         "scores": [0.9, 0.8, 0.7, 0.6, 0.95]},
        {"boxes": [[0, 0, 30, 80], [100, 100, 130, 180]], "scores": [0.5, 0.4]},
    ]
    result = log_average_miss_rate(gt, dets)
    expected = math.exp((7 * math.log(2 / 3) + 2 * math.log(1 / 3)) / 9)
    assert result.mr == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(result.fppi, [0, 0.5, 0.5, 1.0])
    perfect = log_average_miss_rate(gt, [{"boxes": g["boxes"][:1], "scores": [1.0]} for g in gt])
    assert perfect.mr == pytest.approx(math.exp((9 * math.log(1 / 3)) / 9))  # p5 never found
    undefined = log_average_miss_rate([{"boxes": [[0, 0, 5, 5]]}], [{"boxes": [], "scores": []}])
    assert undefined.mr == -1 and np.isnan(undefined.miss_rates).all()  # the official -1: no counted pedestrian


def test_citypersons_official_conventions() -> None:
    two = [{"boxes": [[0, 0, 40, 100], [100, 0, 140, 100]]}]
    # First detection a false positive, one image: FPPI 1, 1 and recall 0, 1/2. Every reference below FPPI 1 reads
    # index -1, the official's last recall (1/2); corrected, recall 0 (miss rate 1) there.
    fp_first = [{"boxes": [[300, 0, 340, 100], [0, 0, 40, 100]], "scores": [0.9, 0.8]}]
    assert log_average_miss_rate(two, fp_first).mr == pytest.approx(0.5, abs=1e-12)
    assert log_average_miss_rate(two, fp_first, corrected=True).mr == pytest.approx(0.5 ** (1 / 9), abs=1e-12)
    # A zero miss rate makes MR^-2 exactly 0 (log(0), no 1e-10 floor).
    assert log_average_miss_rate(two, [{"boxes": two[0]["boxes"], "scores": [0.9, 0.8]}]).mr == 0.0
    # The top max_dets detections per image are kept before the height filter: with 2, the TP (third) is gone.
    three = [{"boxes": [[300, 0, 340, 100], [300, 0, 340, 10], [0, 0, 40, 100]], "scores": [0.9, 0.8, 0.7]}]
    assert log_average_miss_rate(two, three, max_dets=2).miss_rates.tolist() == [1.0] * 9
    assert log_average_miss_rate(two, three).miss_rates.tolist() == [0.5] * 9
    # Detection heights: h_min / 1.25 <= h < h_max * 1.25. A 93.75 px box on a 75 px pedestrian (IoU 0.8) is
    # dropped in Reasonable_small (75 * 1.25) and kept in Reasonable.
    small = [{"boxes": [[0, 0, 30, 75]]}]
    tall = [{"boxes": [[0, 0, 30, 93.75]], "scores": [0.9]}]
    results = evaluate_citypersons(small, tall)
    assert list(results) == ["Reasonable", "Reasonable_small", "Reasonable_occ=heavy", "All"]
    assert results["Reasonable_small"].mr == 1.0 and results["Reasonable"].mr == 0.0
    assert results["Reasonable_occ=heavy"].mr == -1  # visibility 1 is outside [0.2, 0.65]


def test_segmentation_confusion_matrix_hand_computed() -> None:
    # Counted pixels (t, p): (0,0) (0,1) (1,1) (1,1) (2,0); the 255 pixel is skipped.
    # IoU0 = 1 / (2 + 2 - 1) = 1/3, IoU1 = 2 / (2 + 3 - 2) = 2/3, IoU2 = 0 / 1 = 0, class 3 absent -> NaN.
    # mIoU = (1/3 + 2/3 + 0) / 3 = 1/3; pixel accuracy = 3/5; mean class accuracy = (1/2 + 1 + 0) / 3 = 1/2.
    target = torch.tensor([[[0, 0, 1], [1, 2, 255]]])
    pred = torch.tensor([[[0, 1, 1], [1, 0, 2]]])
    cm = ConfusionMatrix(4, ignore_index=255)
    cm.update(pred[:, :1], target[:, :1])
    cm.update(pred[:, 1:].numpy(), target[:, 1:].numpy())
    iou = cm.iou()
    np.testing.assert_allclose(iou[:3], [1 / 3, 2 / 3, 0.0])
    assert math.isnan(iou[3])
    assert cm.miou() == pytest.approx(1 / 3)
    assert cm.pixel_accuracy() == pytest.approx(3 / 5)
    assert cm.mean_class_accuracy() == pytest.approx(1 / 2)
    logits = torch.nn.functional.one_hot(pred.clamp(max=3), 4).permute(0, 3, 1, 2).float()
    again = ConfusionMatrix(4)
    again.update(logits, target)
    assert torch.equal(again.matrix, cm.matrix)
    with pytest.raises(ValueError, match="outside"):
        cm.update(torch.tensor([[0, 7]]), torch.tensor([[0, 1]]))


def test_mean_class_accuracy_convention() -> None:
    # Class 2 is predicted but absent from the targets. Recalls: class 0 1/2, class 1 1. Ours (MMSegmentation's
    # mAcc) averages the classes in the targets: 3/4. torchmetrics' macro MulticlassAccuracy would also count
    # class 2, as 0: (1/2 + 1 + 0) / 3 = 1/2. mIoU agrees between them: (1/2 + 1 + 0) / 3.
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 2, 1]), torch.tensor([0, 0, 1]))
    assert cm.mean_class_accuracy() == pytest.approx(3 / 4)
    assert cm.miou() == pytest.approx(1 / 2)


def test_distributed_helpers_are_noops_when_not_initialised() -> None:
    assert not distributed.is_distributed() and distributed.is_main_process()
    assert distributed.gather_list([1, 2]) == [1, 2]
    assert distributed.gather_dict({3: "a"}) == {3: "a"}
    t = torch.ones(2)
    assert distributed.all_reduce_sum(t) is t and t.tolist() == [1.0, 1.0]


WORKER = """
import os, sys, torch, torch.distributed as dist, torch.multiprocessing as mp
from training import distributed
from training.evaluation.segmentation import ConfusionMatrix

def run(rank, init):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    assert distributed.gather_list([rank, rank + 10]) == [0, 10, 1, 11]
    assert distributed.gather_dict({rank: rank, 5: "padded"}) == {0: 0, 1: 1, 5: "padded"}
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([rank]), torch.tensor([0]))
    cm.synchronize()
    assert cm.matrix.tolist() == [[1, 1], [0, 0]], cm.matrix
    assert distributed.is_main_process() == (rank == 0)
    dist.destroy_process_group()

if __name__ == "__main__":
    mp.spawn(run, args=("file://" + sys.argv[1],), nprocs=2)
"""


def test_distributed_gather_two_ranks(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    env = {"PYTHONPATH": str(REPO), "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "rendezvous")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
