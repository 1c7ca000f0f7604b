"""Pictures of results in the Objects365 paper's Fig. 9 scheme: matching (zoo.visualize.compare), drawing, the
contact sheet, and the commands that write them (`zoo predict --compare`, `python -m training diagnose --pictures`)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.visualize import (
    CROWD_COLOUR,
    FALSE_NEGATIVE_COLOUR,
    FALSE_POSITIVE_COLOUR,
    MATCHED_GT_COLOUR,
    MATCHED_PRED_COLOUR,
    compare,
    contact_sheet,
    draw_comparison,
)

GREY = (128, 128, 128)


def test_each_kind_lands_in_its_set():
    gt = [[10, 10, 60, 60], [120, 10, 170, 60], [10, 70, 50, 110]]
    gt_labels = [1, 1, 1]
    pred = [[12, 12, 62, 62],  # TP on gt 0
            [10, 10, 60, 60],  # same box as gt 0 but lower score: a duplicate, FP
            [10, 70, 50, 110],  # exactly on gt 2 but another class: FP, and gt 2 stays a FN
            [70, 70, 110, 110]]  # on nothing: FP
    c = compare(pred, [1, 1, 2, 1], [0.9, 0.8, 0.95, 0.5], gt, gt_labels)
    assert c.pred_match.tolist() == [0, -1, -1, -1]
    assert c.gt_match.tolist() == [0, -1, -1]
    assert c.matched_pred.tolist() == [0] and c.matched_gt.tolist() == [0]
    assert c.false_positives.tolist() == [1, 2, 3] and c.false_negatives.tolist() == [1, 2]
    assert c.pairs.tolist() == [[0, 0]]
    assert (c.tp, c.fp, c.fn, c.errors) == (1, 3, 2, 5)


def test_matching_is_greedy_by_score_and_takes_the_best_free_box():
    gt = [[0, 0, 10, 10], [0, 0, 10, 12]]
    # the lower-scored prediction fits gt 0 exactly, but the higher-scored one takes it first (IoU 0.9 > 0.75 with
    # gt 1); the lower-scored one then takes gt 1 (IoU 0.83)
    c = compare([[0, 0, 10, 10], [0, 0, 10, 9]], [1, 1], [0.3, 0.9], gt, [1, 1])
    assert c.pred_match.tolist() == [1, 0]
    assert c.pairs.tolist() == [[1, 0], [0, 1]]


def test_iou_threshold_is_inclusive():
    gt = [[0, 0, 10, 10]]
    half = [[0, 0, 10, 5]]  # IoU exactly 0.5
    assert compare(half, [3], [0.9], gt, [3]).tp == 1
    assert compare(half, [3], [0.9], gt, [3], iou_threshold=0.51).tp == 0


def test_crowd_regions_as_coco():
    gt = [[0, 0, 100, 100], [10, 10, 30, 30]]
    crowd = [True, False]
    preds = [[12, 12, 32, 32],  # on the regular box (IoU .67) and inside the crowd region: matches the regular box
             [50, 50, 70, 70],  # inside the crowd region (intersection over its own area 1): ignored, no FP
             [90, 90, 150, 150],  # mostly outside (100 / 3600 of it inside): FP
             [20, 60, 45, 85]]  # inside the crowd region but of another class: FP
    c = compare(preds, [1, 1, 1, 2], [0.9, 0.8, 0.7, 0.6], gt, [1, 1], gt_crowd=crowd)
    assert c.pred_match.tolist() == [1, -1, -1, -1] and c.pred_ignored.tolist() == [False, True, False, False]
    assert c.false_positives.tolist() == [2, 3] and c.false_negatives.tolist() == []  # a crowd is never missed
    assert (c.tp, c.fp, c.fn) == (1, 2, 0)
    drawn = draw_comparison(Image.new("RGB", (160, 160), GREY), c, width=2, captions=False, legend=False)
    assert drawn.getpixel((0, 20)) == drawn.getpixel((50, 60)) == CROWD_COLOUR
    assert drawn.getpixel((90, 120)) == drawn.getpixel((20, 70)) == FALSE_POSITIVE_COLOUR
    legend = np.asarray(draw_comparison(Image.new("RGB", (160, 160), GREY), c))[160:].reshape(-1, 3)
    assert CROWD_COLOUR in {tuple(int(v) for v in px) for px in legend}
    with pytest.raises(ValueError, match="crowd flags"):
        compare([], [], [], gt, [1, 1], gt_crowd=[True])


def test_empty_and_bad_input():
    c = compare([], [], [], [[0, 0, 5, 5]], [1])
    assert (c.tp, c.fp, c.fn) == (0, 0, 1) and c.pairs.shape == (0, 2)
    c = compare(np.zeros((0, 4)), [], [], [], [])
    assert (c.tp, c.fp, c.fn) == (0, 0, 0)
    with pytest.raises(ValueError, match="one entry per box"):
        compare([[0, 0, 5, 5]], [1, 2], [0.5], [], [])
    with pytest.raises(ValueError, match="iou_threshold"):
        compare([], [], [], [], [], iou_threshold=0)


def _constructed() -> tuple[Image.Image, object]:
    image = Image.new("RGB", (200, 130), GREY)
    comparison = compare([[20, 20, 70, 70], [120, 80, 170, 120]], [1, 2], [0.9, 0.6],
                         [[14, 14, 76, 76], [120, 10, 170, 60]], [1, 1])
    return image, comparison


def test_colours_at_box_edges():
    image, c = _constructed()
    assert (c.tp, c.fp, c.fn) == (1, 1, 1)
    drawn = draw_comparison(image, c, ["cat", "dog"], width=3, captions=False, legend=False)
    assert drawn.size == image.size and image.getpixel((14, 40)) == GREY  # a copy: the input is untouched
    px = drawn.getpixel
    assert px((14, 45)) == px((19, 45)) == px((71, 45)) == MATCHED_GT_COLOUR  # ground truth 2 x 3 px, inwards
    assert px((20, 45)) == px((45, 69)) == MATCHED_PRED_COLOUR
    assert px((120, 35)) == px((145, 10)) == FALSE_NEGATIVE_COLOUR
    assert px((120, 100)) == px((169, 100)) == FALSE_POSITIVE_COLOUR
    assert px((45, 45)) == px((100, 100)) == GREY  # inside boxes and between them: untouched


def test_legend_and_captions():
    image, c = _constructed()
    drawn = draw_comparison(image, c, ["cat", "dog"], width=3)
    assert drawn.width == image.width and drawn.height > image.height
    strip = np.asarray(drawn)[image.height:].reshape(-1, 3)
    colours = {tuple(int(v) for v in p) for p in strip}
    for colour in (MATCHED_GT_COLOUR, MATCHED_PRED_COLOUR, FALSE_NEGATIVE_COLOUR, FALSE_POSITIVE_COLOUR):
        assert colour in colours
    plain = np.asarray(draw_comparison(image, c, ["cat", "dog"], width=3, legend=False, captions=False))
    captioned = np.asarray(drawn)[:image.height]
    assert (captioned != plain).any()  # the captions add pixels; without names the label numbers are written
    assert (np.asarray(draw_comparison(image, c, width=3, legend=False)) != plain).any()


@pytest.mark.parametrize(("n", "columns", "grid"), [(5, 2, (2, 3)), (3, 4, (3, 1)), (8, 4, (4, 2))])
def test_contact_sheet_grid(n, columns, grid):
    pictures = [Image.new("RGB", (100 + 10 * k, 60), (40 * k % 256, 90, 200)) for k in range(n)]
    sheet = contact_sheet(pictures, columns=columns, thumb=64)
    assert sheet.size == (grid[0] * 64, grid[1] * 64)
    # first picture (wider than tall) centred in its cell: the cell's middle has its colour, its top corner is white
    assert sheet.getpixel((32, 32)) == (0, 90, 200) and sheet.getpixel((0, 0)) == (255, 255, 255)
    with_text = contact_sheet(pictures, [f"image {k}" for k in range(n)], columns=columns, thumb=64)
    assert with_text.width == sheet.width and with_text.height > sheet.height
    assert (np.asarray(with_text) < 100).any()  # the captions are written in black
    with pytest.raises(ValueError, match="no pictures"):
        contact_sheet([])


def _run(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], check=False, capture_output=True, text=True,
                          timeout=300, cwd=cwd, env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"})


def _near(picture: Image.Image, x: int, y: int, colour: tuple[int, int, int]) -> bool:
    """The mean colour of a 2-pixel-wide line segment around (x, y) of a JPEG is within reach of ``colour``."""
    patch = np.asarray(picture.convert("RGB"), dtype=np.float64)[y - 8:y + 8, x:x + 2].reshape(-1, 3).mean(axis=0)
    return bool(np.abs(patch - colour).max() < 60)


# hand-written ground truth for two scikit-image photos (yolox_nano_coco at score >= 0.3 finds the person in the
# first and calls the second a cat over the whole photo)
ANNOTATION = {
    "images": [{"id": 1, "file_name": "photos/astronaut.png", "width": 512, "height": 512},
               {"id": 2, "file_name": "chelsea.png", "width": 451, "height": 300}],
    "categories": [{"id": 1, "name": "person"}, {"id": 5, "name": "Airplane"}, {"id": 18, "name": "dog"},
                   {"id": 90, "name": "helmet"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 15, 345, 497]},  # found: TP
        {"id": 2, "image_id": 1, "category_id": 5, "bbox": [355, 0, 115, 285]},  # the shuttle as airplane: FN
        {"id": 3, "image_id": 1, "category_id": 90, "bbox": [278, 343, 232, 169]},  # not a COCO class: left out
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 100], "iscrowd": 1},  # crowd: never a FN
        {"id": 5, "image_id": 2, "category_id": 18, "bbox": [40, 20, 380, 270]},  # the cat as a dog: FN, cat FP
    ]}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(data.chelsea()).save(folder / "chelsea.png")
    Image.fromarray(data.chelsea()).save(folder / "unlisted.png")
    (folder / "ann.json").write_text(json.dumps(ANNOTATION))
    return folder


def test_zoo_predict_compare_on_real_photos(photos):
    done = _run("zoo", "predict", ".", "--compare", "ann.json", "--out", "pictures", cwd=photos)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "astronaut.png (512x512): 1 detection; TP 1  FP 0  FN 1" in lines
    assert "chelsea.png (451x300): 1 detection; TP 0  FP 1  FN 1" in lines
    assert lines[-1].startswith("2 images at IoU 0.5: TP 1  FP 1  FN 2;")
    # left out, each said once: the unlisted photo and the category the model lacks
    assert done.stderr.count("unlisted.png") == 1 and done.stderr.count("helmet") == 1
    astronaut = Image.open(photos / "pictures" / "astronaut.jpg")
    assert astronaut.width == 512 and astronaut.height > 512  # the legend strip below
    assert _near(astronaut, 20, 250, MATCHED_GT_COLOUR)
    assert _near(astronaut, 469, 150, FALSE_NEGATIVE_COLOUR)
    chelsea = Image.open(photos / "pictures" / "chelsea.jpg")
    assert _near(chelsea, 40, 150, FALSE_NEGATIVE_COLOUR) and _near(chelsea, 0, 150, FALSE_POSITIVE_COLOUR)
    sheet = Image.open(photos / "pictures" / "contact_sheet.jpg")
    assert sheet.width == 2 * 256 and 256 < sheet.height < 2 * 256  # one row of two 256-pixel cells and captions
    # worst first: chelsea (2 errors) left of astronaut (1)
    cells = np.asarray(sheet, dtype=np.float64)
    left, right = cells[:256, :256].mean(axis=(0, 1)), cells[:256, 256:].mean(axis=(0, 1))
    small = chelsea.copy()
    small.thumbnail((256, 256))
    tone = np.asarray(small, dtype=np.float64).mean(axis=(0, 1))
    assert np.abs(left - 255 + (255 - tone) * small.width * small.height / 256**2).max() < 10
    assert np.abs(right - left).max() > 10


def test_zoo_predict_compare_json_and_errors(photos):
    done = _run("zoo", "predict", "astronaut.png", "--compare", "ann.json", "--out", "pj", "--json", cwd=photos)
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout)  # stdout stays JSON lines: the summary goes to stderr
    assert (line["tp"], line["fp"], line["fn"]) == (1, 0, 1)
    for args, message in [(("unlisted.png",), "--compare needs --out DIR"),
                          (("unlisted.png", "--out", "o"), "no image given (1) is listed in ann.json"),
                          (("astronaut.png", "--out", "o", "--iou", "0"), "--iou must be in (0, 1], got 0.0")]:
        done = _run("zoo", "predict", "--compare", "ann.json", *args, cwd=photos)
        assert done.returncode == 2 and message in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    (photos / "bad.json").write_text(json.dumps({"images": [{"id": 1}], "annotations": [], "categories": []}))
    done = _run("zoo", "predict", "astronaut.png", "--compare", "bad.json", "--out", "o", cwd=photos)
    assert done.returncode == 2 and "malformed COCO annotation" in done.stderr
    assert len(done.stderr.splitlines()) == 1


def _diagnose_case(folder: Path) -> None:
    """Three annotated images (ids 10, 20, 30; categories 3 cat, 7 dog) with known errors at IoU .5, score >= .3:
    a.png none (a TP, a detection on a crowd region, a low-scored stray), b.png 3 (two FN, one FP), c.png 2 (a class
    confusion)."""
    (folder / "img").mkdir()
    for name, shade in (("a", 90), ("b", 120), ("c", 150)):
        Image.new("RGB", (200, 150), (shade, shade, shade)).save(folder / "img" / f"{name}.png")
    ann = {"images": [{"id": 10 * (k + 1), "file_name": f"{n}.png", "width": 200, "height": 150}
                      for k, n in enumerate("abc")],
           "categories": [{"id": 3, "name": "cat", "supercategory": "animal"},
                          {"id": 7, "name": "dog", "supercategory": "animal"}],
           "annotations": [{"id": 1, "image_id": 10, "category_id": 3, "bbox": [20, 20, 60, 60], "area": 3600},
                           {"id": 2, "image_id": 10, "category_id": 7, "bbox": [120, 20, 60, 60], "area": 3600,
                            "iscrowd": 1},
                           {"id": 3, "image_id": 20, "category_id": 3, "bbox": [10, 10, 50, 50], "area": 2500},
                           {"id": 4, "image_id": 20, "category_id": 7, "bbox": [100, 10, 50, 50], "area": 2500},
                           {"id": 5, "image_id": 30, "category_id": 7, "bbox": [30, 30, 100, 80], "area": 8000}]}
    pred = [{"image_id": 10, "category_id": 3, "bbox": [22, 22, 60, 60], "score": 0.9},
            {"image_id": 10, "category_id": 7, "bbox": [125, 25, 50, 50], "score": 0.8},  # on the crowd box
            {"image_id": 10, "category_id": 3, "bbox": [100, 100, 40, 40], "score": 0.1},  # below the threshold
            {"image_id": 20, "category_id": 7, "bbox": [20, 90, 60, 40], "score": 0.7},
            {"image_id": 30, "category_id": 3, "bbox": [30, 30, 100, 80], "score": 0.6}]
    (folder / "ann.json").write_text(json.dumps(ann))
    (folder / "pred.json").write_text(json.dumps(pred))


def test_diagnose_comparisons_count_each_image(tmp_path):
    from training.diagnose import comparisons
    from training.evaluation.coco import load_detections, load_ground_truth

    _diagnose_case(tmp_path)
    truth = load_ground_truth(tmp_path / "ann.json")
    found = comparisons(truth, load_detections(tmp_path / "pred.json", truth))
    assert {int(truth.image_ids[i]): (c.tp, c.fp, c.fn) for i, c in found.items()} == {
        10: (1, 0, 0), 20: (0, 1, 2), 30: (0, 1, 1)}
    assert found[0].pred_ignored.tolist() == [False, True]  # the dog on the crowd region, as COCO
    assert found[2].pred_labels.tolist() == [1] and found[2].gt_labels.tolist() == [2]  # positions + 1: cat, dog


def test_diagnose_pictures_of_the_worst_images(tmp_path):
    _diagnose_case(tmp_path)
    done = _run("training", "diagnose", "pred.json", "ann.json", "--pictures", "worst", "--images", "img",
                "--worst", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "pictures of the 2 images with the most errors" in done.stdout
    assert sorted(p.name for p in (tmp_path / "worst").iterdir()) == ["b.jpg", "c.jpg", "contact_sheet.jpg"]
    b = Image.open(tmp_path / "worst" / "b.jpg")
    assert b.width == 200 and b.height > 150
    assert _near(b, 10, 35, FALSE_NEGATIVE_COLOUR) and _near(b, 100, 35, FALSE_NEGATIVE_COLOUR)
    assert _near(b, 20, 110, FALSE_POSITIVE_COLOUR)
    assert _near(b, 60, 140, (120, 120, 120))  # the image itself
    sheet = Image.open(tmp_path / "worst" / "contact_sheet.jpg")
    assert sheet.width == 2 * 256 and 256 < sheet.height < 2 * 256
    # without --images: grey canvases of the annotated size; --json lists the pictures
    done = _run("training", "diagnose", "pred.json", "ann.json", "--pictures", "canvas", "--worst", "5", "--json",
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    listed = [Path(p).name for p in json.loads(done.stdout)["pictures"]]
    assert listed == ["b.jpg", "c.jpg", "a.jpg", "contact_sheet.jpg"]  # worst first
    assert Image.open(tmp_path / "canvas" / "a.jpg").width == 200
    done = _run("training", "diagnose", "pred.json", "ann.json", "--pictures", "x", "--worst", "0", cwd=tmp_path)
    assert done.returncode == 2 and "--worst must be at least 1" in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_ground_truth_stays_visible_under_a_prediction_on_the_same_box():
    c = compare([[20, 20, 80, 80]], [2], [0.9], [[20, 20, 80, 80]], [1])  # a class confusion: FP and FN
    drawn = draw_comparison(Image.new("RGB", (100, 100), GREY), c, width=2, captions=False, legend=False)
    assert drawn.getpixel((20, 50)) == drawn.getpixel((21, 50)) == FALSE_POSITIVE_COLOUR
    assert drawn.getpixel((22, 50)) == drawn.getpixel((23, 50)) == FALSE_NEGATIVE_COLOUR
    assert drawn.getpixel((24, 50)) == GREY


def test_picture_writer_names_and_ranks(tmp_path):
    from zoo.result_pictures import PictureWriter

    writer = PictureWriter(tmp_path, ["cat"], thumb=64, columns=3)
    clean = compare([[10, 10, 40, 40]], [1], [0.9], [[10, 10, 40, 40]], [1])
    bad = compare([[10, 10, 40, 40]], [1], [0.9], [[50, 10, 90, 40]], [1])
    image = Image.new("RGB", (100, 60), GREY)
    paths = [writer.add("x", image, clean), writer.add("x", image, bad), writer.add("a_very_long_image_name", image,
                                                                                    clean)]
    assert [p.name for p in paths] == ["x.jpg", "x_2.jpg", "a_very_long_image_name.jpg"]
    sheet = Image.open(writer.write_sheet())
    assert sheet.size[0] == 3 * 64
    # worst first: x_2 (2 errors) in the first cell; the clean pictures after it (a_very_long_image_name before x)
    red = np.abs(np.asarray(sheet, dtype=np.float64)[:64] - FALSE_NEGATIVE_COLOUR).max(axis=2) < 60
    in_cells = [int(red[:, 64 * k:64 * (k + 1)].sum()) for k in range(3)]  # the legend's red swatch is in each
    assert in_cells[0] > in_cells[1] == in_cells[2] > 0
    with pytest.raises(ValueError, match="no pictures"):
        PictureWriter(tmp_path / "empty", None).write_sheet()
