"""Annotation index, datasets, transforms, sampler, recipes and the L2-norm lr rule (fast, no training)."""
from __future__ import annotations

import json
import logging
import os
import time

import numpy as np
import pytest
import torch
from test_training_tiny import make_coco_set

from training.data import AnnotationError, AnnotationIndex, CocoDetection
from training.lr_rule import l2_norm_ratio
from training.recipes import get_recipe
from training.sampler import GroupedBatchSampler
from training.transforms import detection_train

NAMES, IDS = ["person", "car", "dog"], [1, 3, 18]


@pytest.fixture()
def coco(tmp_path):
    return make_coco_set(tmp_path, NAMES, IDS, images=8)


def test_index_matches_json_and_is_memory_mapped(coco):
    ann, _ = coco
    doc = json.loads(ann.read_text())
    index = AnnotationIndex.load(ann)
    assert len(index) == len(doc["images"]) and index.num_boxes == len(doc["annotations"])
    assert isinstance(index.boxes, np.memmap)
    assert index.category_names == NAMES and index.category_ids == IDS
    first = [a for a in doc["annotations"] if a["image_id"] == doc["images"][3]["id"]]
    boxes, cats, _ = index.annotations(3)
    x, y, w, h = first[0]["bbox"]
    assert boxes[0].tolist() == [x, y, x + w, y + h]
    assert [NAMES[c] for c in cats] == [NAMES[IDS.index(a["category_id"])] for a in first]
    assert index.file_name(3) == doc["images"][3]["file_name"]


def test_index_rebuilt_when_json_changes(coco):
    ann, _ = coco
    assert len(AnnotationIndex.load(ann)) == 8
    doc = json.loads(ann.read_text())
    doc["images"] = doc["images"][:5]
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] <= 5]
    time.sleep(0.01)
    ann.write_text(json.dumps(doc))
    assert len(AnnotationIndex.load(ann)) == 5


def test_index_falls_back_to_cache_dir_when_folder_read_only(coco, tmp_path, monkeypatch):
    ann, _ = coco
    monkeypatch.setenv("O365ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    index = AnnotationIndex.load(ann)
    assert len(index) == 8 and any((tmp_path / "cache" / "index").iterdir())


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["annotations"][0].pop("bbox"), "annotations[0] has no 'bbox'"),
    (lambda d: d["annotations"][1].update(bbox=[1, 2, 3]), "annotations[1].bbox"),
    (lambda d: d["images"][2].pop("width"), "images[2] has no 'width'"),
    (lambda d: d["annotations"][0].update(category_id=999), "category_id = 999"),
    (lambda d: d["annotations"][0].update(image_id=12345), "image_id = 12345"),
])
def test_malformed_annotations_name_file_and_field(coco, mutate, message):
    ann, _ = coco
    doc = json.loads(ann.read_text())
    mutate(doc)
    ann.write_text(json.dumps(doc))
    with pytest.raises(AnnotationError, match="ann.json") as err:
        AnnotationIndex.load(ann)
    assert message in str(err.value)


def test_truncated_json_is_a_clear_error(coco):
    ann, _ = coco
    ann.write_bytes(ann.read_bytes()[:200])
    with pytest.raises(AnnotationError, match="ann.json"):
        AnnotationIndex.load(ann)


def test_boxes_clipped_and_degenerate_dropped_with_log(coco, caplog):
    ann, images = coco
    doc = json.loads(ann.read_text())
    img = doc["images"][1]
    doc["annotations"] += [
        {"id": 900, "image_id": img["id"], "category_id": 1, "bbox": [-10, -5, 40, 30], "iscrowd": 0},
        {"id": 901, "image_id": img["id"], "category_id": 1, "bbox": [img["width"] + 5, 10, 20, 20], "iscrowd": 0},
        {"id": 902, "image_id": img["id"], "category_id": 1, "bbox": [5, 5, 0, 10], "iscrowd": 0},
    ]
    ann.write_text(json.dumps(doc))
    with caplog.at_level(logging.INFO):
        ds = CocoDetection(ann, images)
    assert ds.index.stats["clipped"] >= 1 and ds.index.stats["degenerate"] == 2
    assert "clipped" in caplog.text and "dropped 2 degenerate" in caplog.text
    boxes = torch.from_numpy(np.array(ds.index.boxes))
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 128).all() and (boxes[:, 2] > boxes[:, 0]).all()


def test_missing_image_skipped_with_log_and_crowd_left_out(coco, caplog):
    ann, images = coco
    doc = json.loads(ann.read_text())
    doc["annotations"][0]["iscrowd"] = 1
    ann.write_text(json.dumps(doc))
    (images / doc["images"][0]["file_name"]).unlink()
    with caplog.at_level(logging.INFO):
        ds = CocoDetection(ann, images)
    assert len(ds) == 7 and "missing" in caplog.text
    crowd_image = [i for i in range(len(ds)) if ds.image_info(i)["id"] == doc["annotations"][0]["image_id"]]
    for i in crowd_image:
        assert len(ds[i][1]["boxes"]) == sum(1 for a in doc["annotations"][1:]
                                             if a["image_id"] == doc["annotations"][0]["image_id"])
    # an image deleted after the index was built: the error names the file
    (images / ds.image_info(0)["file_name"]).unlink()
    with pytest.raises(FileNotFoundError, match=ds.image_info(0)["file_name"]):
        ds[0]


def test_category_mapping_by_name_and_unknown_names(tmp_path):
    ann, images = make_coco_set(tmp_path, ["car", "person", "lamp"], [7, 8, 9], images=6)
    with pytest.raises(ValueError, match="'lamp'"):
        CocoDetection(ann, images, categories="coco")
    ds = CocoDetection(ann, images, categories="coco", on_unknown="skip")
    coco_names = list(ds.categories)
    for i in range(len(ds)):
        _, target = ds[i]
        names = {coco_names[int(label) - 1] for label in target["labels"]}
        assert names <= {"car", "person"}
    assert ds._label_of.tolist() == [coco_names.index("car") + 1, coco_names.index("person") + 1, -1]


def test_transforms_resize_flip_deterministic():
    t = detection_train((64, 80), max_size=100, flip=0.5)
    image = torch.rand(3, 96, 128)
    target = {"boxes": torch.tensor([[0.0, 0.0, 64.0, 48.0]]), "labels": torch.tensor([1])}
    a = t(image, target, torch.Generator().manual_seed(5))
    b = t(image, target, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    for seed in range(8):
        im, tg = t(image, target, torch.Generator().manual_seed(seed))
        h, w = im.shape[-2:]
        assert min(h, w) in (64, 75) and max(h, w) <= 100  # short 64 or 80 (capped by long 100 -> 75)
        assert torch.allclose(tg["boxes"][0, 2] - tg["boxes"][0, 0], torch.tensor(64.0 * w / 128), atol=1e-4)


def test_sampler_groups_ranks_and_resume():
    ratios = np.array([1.5, 0.6] * 10)
    single = list(GroupedBatchSampler(ratios, 20, 4, seed=3, max_iter=12))
    r0 = list(GroupedBatchSampler(ratios, 20, 2, world_size=2, rank=0, seed=3, max_iter=12))
    r1 = list(GroupedBatchSampler(ratios, 20, 2, world_size=2, rank=1, seed=3, max_iter=12))
    assert [a + b for a, b in zip(r0, r1)] == single
    for batch in single:
        assert len({ratios[i] < 1 for i, _ in batch}) == 1  # one orientation per batch
    resumed = list(GroupedBatchSampler(ratios, 20, 4, seed=3, start_iter=7, max_iter=12))
    assert resumed == single[7:]
    assert list(GroupedBatchSampler(ratios, 20, 4, seed=4, max_iter=12)) != single


def test_recipe_overrides_and_linear_scaling():
    r = get_recipe("o365_faster_rcnn_1350k")
    assert (r.lr, r.batch_size, r.steps, r.max_iter, r.sync_bn) == (0.02, 16, (900_000, 1_200_000), 1_350_000, True)
    assert "§4.1" in r.source
    s = r.override(["min_sizes=640,800", "clip_grad=none", "amp=false"]).for_batch(32)
    assert s.min_sizes == (640, 800) and s.clip_grad is None and not s.amp
    assert s.lr == pytest.approx(0.04) and s.max_iter == 675_000 and s.steps == (450_000, 600_000)
    with pytest.raises(ValueError, match="unknown recipe field 'lrr'"):
        r.override(["lrr=1"])
    with pytest.raises(ValueError, match="expected"):
        r.override(["max_iter=abc"])
    paper = get_recipe("coco_finetune_paper")
    assert paper.lr_rule == "l2norm" and paper.gamma == pytest.approx(0.2)
    assert get_recipe("mmdet_o365_faster_rcnn_1x").for_dataset(6400).max_iter == 1200


def test_l2_norm_ratio_from_weights():
    imagenet = {"conv1.weight": torch.ones(4, 3), "fc.weight": torch.ones(10, 10), "bn1.running_mean": torch.ones(4)}
    pretrained = {"backbone.body.conv1.weight": 0.15 * torch.ones(4, 3),
                  "backbone.fpn.inner.weight": torch.ones(5), "roi_heads.x.weight": torch.ones(3)}
    assert l2_norm_ratio(pretrained, imagenet) == pytest.approx(0.15)
    with pytest.raises(ValueError, match="share no backbone"):
        l2_norm_ratio({"backbone.body.other": torch.ones(2)}, imagenet)


def test_citypersons_reader_reasonable_subset_and_bad_label(tmp_path):
    from PIL import Image

    from training.data import CityPersons

    (tmp_path / "gt" / "train" / "aachen").mkdir(parents=True)
    (tmp_path / "img" / "train" / "aachen").mkdir(parents=True)
    Image.new("RGB", (200, 100)).save(tmp_path / "img" / "train" / "aachen" / "aachen_000000_000019_leftImg8bit.png")
    objects = [{"label": "pedestrian", "bbox": [10, 10, 30, 60], "bboxVis": [10, 10, 30, 60]},
               {"label": "pedestrian", "bbox": [50, 10, 10, 20], "bboxVis": [50, 10, 10, 20]},  # too short
               {"label": "rider", "bbox": [90, 10, 30, 60], "bboxVis": [90, 10, 30, 60]}]
    ann = tmp_path / "gt" / "train" / "aachen" / "aachen_000000_000019_gtBboxCityPersons.json"
    ann.write_text(json.dumps({"imgWidth": 200, "imgHeight": 100, "objects": objects}))
    ds = CityPersons(tmp_path / "gt", tmp_path / "img", "train")
    image, target = ds[0]
    assert image.shape == (3, 100, 200) and target["boxes"].tolist() == [[10, 10, 40, 70]]
    assert len(ds.annotation(0).ignore) == 2
    cyclist = {"label": "cyclist", "bbox": [1, 1, 5, 5]}
    ann.write_text(json.dumps({"imgWidth": 200, "imgHeight": 100, "objects": [cyclist]}))
    with pytest.raises(AnnotationError, match="objects\\[0\\].label = 'cyclist'"):
        CityPersons(tmp_path / "gt", tmp_path / "img", "train")


def test_segmentation_masks_voc_palette_and_ade_reduce_zero(tmp_path):
    from PIL import Image

    from training.data.segmentation import SegmentationDataset
    from training.transforms import segmentation_train

    Image.new("RGB", (40, 30)).save(tmp_path / "a.jpg")
    mask = np.zeros((30, 40), np.uint8)
    mask[5:10, 5:10], mask[0, :] = 15, 255
    pal = Image.fromarray(mask, mode="P")
    pal.putpalette([0, 0, 0, 128, 0, 0] * 128)
    pal.save(tmp_path / "a.png")
    ds = SegmentationDataset([tmp_path / "a.jpg"], [tmp_path / "a.png"], 21)
    m = ds[0][1]["mask"]
    assert m[6, 6] == 15 and m[0, 0] == 255 and m[20, 20] == 0
    mask[0, :] = 0  # ADE20K masks hold 0 ("other") and 1..150
    Image.fromarray(mask, mode="L").save(tmp_path / "ade.png")
    ade = SegmentationDataset([tmp_path / "a.jpg"], [tmp_path / "ade.png"], 150, reduce_zero_label=True)
    m = ade[0][1]["mask"]
    assert m[6, 6] == 14 and m[20, 20] == 255
    aug = SegmentationDataset([tmp_path / "a.jpg"], [tmp_path / "a.png"], 21, transforms=segmentation_train(32))
    image, target = aug[(0, 7)]
    assert image.shape == (3, 32, 32) and target["mask"].shape == (32, 32)
    assert torch.equal(aug[(0, 7)][1]["mask"], target["mask"])
    bad = SegmentationDataset([tmp_path / "a.jpg"], [tmp_path / "a.png"], 10)
    with pytest.raises(ValueError, match="label 15 outside 0..9"):
        bad[0]
