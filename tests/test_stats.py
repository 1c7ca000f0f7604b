"""Dataset statistics (training/stats.py) against numbers computed by hand on a tiny JSON."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.data.index import AnnotationIndex
from training.stats import compute_stats, format_stats, mapped_categories, stats_cmd, union_areas


def _box(cat: int, x: float, y: float, w: float, h: float, crowd: int = 0) -> dict:
    return {"category_id": cat, "bbox": [x, y, w, h], "area": w * h, "iscrowd": crowd}


# Image 1 (100x50): two overlapping 20x20 boxes (overlap 10x10) and a 50x50 one: union 400 + 400 - 100 + 2500 = 3200.
# Image 2 (200x100): a crowd box over the whole image with a 10x10 box inside it. Image 3: no boxes.
BOXES = {1: [_box(1, 0, 0, 20, 20), _box(3, 10, 10, 20, 20), _box(1, 50, 0, 50, 50)],
         2: [_box(2, 0, 0, 200, 100, crowd=1), _box(1, 10, 10, 10, 10)], 3: []}
TINY = {"images": [{"id": 1, "width": 100, "height": 50, "file_name": "a.jpg"},
                   {"id": 2, "width": 200, "height": 100, "file_name": "b.jpg"},
                   {"id": 3, "width": 100, "height": 50, "file_name": "c.jpg"}],
        "annotations": [{"id": 10 * i + j, "image_id": i, **a} for i, anns in BOXES.items()
                        for j, a in enumerate(anns)],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "Sneakers"}, {"id": 3, "name": "Car"}]}


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def test_union_area_counts_overlaps_once() -> None:
    # overlapping pair (175), an exact duplicate (adds 0), a box touching the second along an edge (adds 50)
    boxes = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [0, 0, 10, 10], [10, 0, 20, 5], [3, 3, 4, 4]], np.float32)
    assert union_areas(boxes, np.array([0, 4, 4, 5])).tolist() == [225.0, 0.0, 1.0]


def test_union_area_matches_a_raster() -> None:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 9, 40)
    xy = rng.integers(0, 30, (counts.sum(), 2))
    boxes = np.concatenate([xy, xy + rng.integers(1, 15, (counts.sum(), 2))], axis=1).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    expected = []
    for a, b in zip(offsets[:-1], offsets[1:]):
        grid = np.zeros((50, 50), bool)
        for x1, y1, x2, y2 in boxes[a:b].astype(int):
            grid[y1:y2, x1:x2] = True
        expected.append(grid.sum())
    assert union_areas(boxes, offsets).tolist() == expected


def test_statistics_by_hand(tiny: Path, tmp_path: Path) -> None:
    index = AnnotationIndex.load(tiny, tmp_path / "cache")
    assert mapped_categories(index, "coco") == [0, 2]  # person and Car; COCO has no sneakers
    stats = compute_stats(index, {"coco": mapped_categories(index, "coco")})
    assert stats["table1"] == {"images": 3, "categories": 3, "boxes": 5, "boxes_per_image": 5 / 3}
    assert stats["crowd_boxes"] == 1
    assert {k: stats["box_sizes"][k] for k in ("small", "medium", "large")} == {"small": 3, "medium": 1, "large": 1}
    assert [(c["name"], c["boxes"], c["images"]) for c in stats["categories"]] == [
        ("person", 3, 2), ("Sneakers", 1, 1), ("Car", 1, 1)]
    assert stats["long_tail"]["top_10pct_categories_box_share"] == pytest.approx(3 / 5)  # 1 category of 3
    assert stats["resolution"]["most_common"][0] == {"width": 100, "height": 50, "images": 2}

    every = stats["effective"]["all"]
    assert every["boxes_per_image"] == {"mean": 5 / 3, "median": 2.0, "min": 0.0, "max": 3.0}
    assert every["categories_per_image"]["mean"] == pytest.approx(4 / 3)
    assert every["area_ratio"]["mean"] == pytest.approx((3200 / 5000 + 1.0 + 0.0) / 3)  # union, not 3700 / 5000
    assert every["histograms"]["boxes_per_image"][:4] == [1, 0, 1, 1]

    coco = stats["effective"]["coco"]
    assert (coco["categories"], coco["boxes"], coco["images_with_boxes"]) == (2, 4, 2)
    assert coco["boxes_per_image"]["mean"] == pytest.approx(4 / 3)
    assert coco["categories_per_image"]["mean"] == pytest.approx(1.0)  # {person, Car}, {person}, {}
    assert coco["area_ratio"]["mean"] == pytest.approx((0.64 + 100 / 20000) / 3)
    text = format_stats(stats)
    assert "1.67" in text and "top 10% of categories hold 60.0%" in text


def test_command_json_images_and_plots(tiny: Path, tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(b"")
    out = json.loads(stats_cmd(str(tiny), str(tmp_path / "imgs"), ["voc"], as_json=True, plots=str(tmp_path / "figs")))
    assert out["effective"]["voc"]["boxes"] == 4
    assert out["images_dir"]["missing"] == 2 and out["images_dir"]["missing_examples"] == ["b.jpg", "c.jpg"]
    assert sorted(Path(p).name for p in out["figures"]) == ["dataset_stats.png", "effective_annotations.png"]
    assert all(Path(p).stat().st_size > 0 for p in out["figures"])


def test_cli_prints_the_tables(tiny: Path, capsys) -> None:
    from training.cli import main

    assert main(["stats", str(tiny), "--map", "coco"]) == 0
    out = capsys.readouterr().out
    assert "top 10% of categories hold 60.0%" in out and "\ncoco " in out
