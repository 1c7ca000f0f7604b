"""``python -m training eval --metric coco|voc|voc07|citypersons|miou`` through a subprocess, on tiny datasets in
each format drawn in flat colours, with the oracle models of ``evaluation_oracles`` (they find person and car,
never dog), so that every printed figure is known in advance."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from evaluation_oracles import COLOURS, VOC, OracleSegmenter
from PIL import Image

from training.evaluation.segmentation import ConfusionMatrix
from training.publish import spec_json
from zoo.checkpoint import save_weights
from zoo.preprocess import Preprocessing
from zoo.registry import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
# Two images: (name, x, y, w, h) rectangles. The dog is never found.
SCENES = [[("person", 10, 8, 16, 30), ("car", 40, 20, 20, 12)], [("person", 30, 5, 12, 36), ("dog", 4, 30, 20, 14)]]


def draw(size: tuple[int, int], rects: list[tuple[str, int, int, int, int]]) -> np.ndarray:
    image = np.full((size[1], size[0], 3), 120, np.uint8)
    for name, x, y, w, h in rects:
        image[y:y + h, x:x + w] = COLOURS[name]
    return image


def oracle(tmp_path: Path, task: str) -> Path:
    arch = "oracle_detector_test" if task == "detection" else "oracle_segmenter_test"
    spec = ModelSpec(name=arch, arch=arch, task=task, categories="voc", source=None, sha256=None, file_size=None,
                     converter=None, preprocessing=Preprocessing(), license="test",
                     recipe="tests/evaluation_oracles.py")
    return save_weights({"unused": torch.zeros(1)}, tmp_path / f"{arch}.safetensors",
                        {"model": arch, "spec": spec_json(spec)})


def printed(stdout: str) -> dict[str, str]:
    """The report's value lines as name -> printed value."""
    return {line.split()[0]: line.split()[1] for line in stdout.splitlines()[1:]}


def run_eval(weights: Path, metric: str, *args: str) -> tuple[str, dict]:
    out = weights.parent / f"{metric}.json"
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'tests'}{os.pathsep}{ROOT}", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "training", "eval", str(weights), "--import", "evaluation_oracles",
                           "--metric", metric, *args, "--out", str(out)], cwd=weights.parent, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


@pytest.mark.parametrize("metric", ["voc", "voc07"])
def test_eval_voc(tmp_path: Path, metric: str) -> None:
    root = tmp_path / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    for k, rects in enumerate(SCENES):
        Image.fromarray(draw((64, 48), rects)).save(root / "JPEGImages" / f"{k}.png")  # lossless: exact colours
        objects = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{x + 1}</xmin>"
                          f"<ymin>{y + 1}</ymin><xmax>{x + w}</xmax><ymax>{y + h}</ymax></bndbox></object>"
                          for n, x, y, w, h in rects)  # VOC's 1-based inclusive pixels
        (root / "Annotations" / f"{k}.xml").write_text(
            f"<annotation><filename>{k}.png</filename><size><width>64</width><height>48</height></size>"
            f"{objects}</annotation>")
    (root / "ImageSets/Main/test.txt").write_text("0\n1\n")
    stdout, values = run_eval(oracle(tmp_path, "detection"), metric, "--ann", str(root))
    assert values == pytest.approx({"mAP": 2 / 3, "AP/car": 1.0, "AP/dog": 0.0, "AP/person": 1.0}, abs=1e-12)
    assert stdout.splitlines()[0].startswith("VOC2007 11-point" if metric == "voc07" else "VOC AP")
    assert printed(stdout) == {"mAP": "66.67", "AP/car": "100.00", "AP/dog": "0.00", "AP/person": "100.00"}


def test_eval_coco(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    ids = {"person": 1, "car": 3, "dog": 18}
    doc = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for n, i in ids.items()]}
    for k, rects in enumerate(SCENES):
        Image.fromarray(draw((64, 48), rects)).save(tmp_path / "images" / f"{k}.png")
        doc["images"].append({"id": 2**62 + k, "file_name": f"{k}.png", "width": 64, "height": 48})
        doc["annotations"] += [{"image_id": 2**62 + k, "category_id": ids[n], "bbox": [x, y, w, h], "area": w * h,
                                "iscrowd": 0} for n, x, y, w, h in rects]
    for i, a in enumerate(doc["annotations"]):
        a["id"] = i + 1
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    stdout, values = run_eval(oracle(tmp_path, "detection"), "coco", "--ann", str(tmp_path / "ann.json"),
                              "--images", str(tmp_path / "images"))
    assert values["AP"] == pytest.approx(2 / 3) and values["AP50"] == pytest.approx(2 / 3)
    assert values["APl"] == -1  # no box above 96^2
    assert stdout.startswith("COCO box AP (%)\n")
    assert printed(stdout)["AP"] == "66.67" and printed(stdout)["APl"] == "-"


def test_eval_citypersons(tmp_path: Path) -> None:
    # Pedestrians (x, y, w, h, visible fraction of the height, colour): A1 60 px (found), B1 100 px (found),
    # B2 80 px half visible and B3 70 px drawn as dogs (missed). Counted per setup and MR^-2 (no false positives,
    # so one recall at every reference):
    #   Reasonable (h >= 50, vis >= 0.65): A1 B1 B3, 2 found -> 1/3
    #   Reasonable_small (50..75): A1 B3 (B1's 100 px detection is >= 75 * 1.25, dropped), 1 found -> 1/2
    #   Reasonable_occ=heavy (vis 0.2..0.65): B2, missed; the other detections lie on ignored boxes -> 1
    #   All (h >= 20, vis >= 0.2): all four, 2 found -> 1/2
    people = {"a": [(20, 10, 24, 60, 1.0, "person")],
              "b": [(60, 10, 40, 100, 1.0, "person"), (120, 20, 32, 80, 0.5, "dog"), (170, 30, 28, 70, 1.0, "dog")]}
    for stem, objects in {**people, "c": []}.items():
        folder_gt, folder_im = tmp_path / "gt/val/town", tmp_path / "im/val/town"
        folder_gt.mkdir(parents=True, exist_ok=True), folder_im.mkdir(parents=True, exist_ok=True)
        doc = {"imgWidth": 256, "imgHeight": 128, "objects": [
            {"label": "pedestrian", "bbox": [x, y, w, h], "bboxVis": [x, y, w, h * v]} for x, y, w, h, v, _ in objects]}
        doc["objects"].append({"label": "rider", "bbox": [230, 0, 20, 60], "bboxVis": [230, 0, 20, 60]})
        (folder_gt / f"town_{stem}_gtBboxCityPersons.json").write_text(json.dumps(doc))
        image = draw((256, 128), [(c, x, y, w, h) for x, y, w, h, _, c in objects])
        Image.fromarray(image).save(folder_im / f"town_{stem}_leftImg8bit.png")
    stdout, values = run_eval(oracle(tmp_path, "detection"), "citypersons", "--ann", str(tmp_path / "gt"),
                              "--images", str(tmp_path / "im"))
    assert values == pytest.approx({"MR/Reasonable": 1 / 3, "MR/Reasonable_small": 1 / 2,
                                    "MR/Reasonable_occ=heavy": 1.0, "MR/All": 1 / 2}, abs=1e-12)
    line = next(x for x in stdout.splitlines() if "MR/Reasonable_small" in x)
    assert line.split()[1] == "50.00" and line.endswith("height [50, 75], visibility [0.65, 1e+10]")


def test_eval_miou(tmp_path: Path) -> None:
    root = tmp_path / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    matrix = ConfusionMatrix(len(VOC) + 1, class_names=("background", *VOC))
    for k, rects in enumerate(SCENES):
        image = draw((64, 48), rects)
        mask = np.zeros((48, 64), np.uint8)
        for name, x, y, w, h in rects:
            mask[y:y + h, x:x + w] = VOC.index(name) + 1
        mask[0] = 255  # an ignored row
        Image.fromarray(image).save(root / "JPEGImages" / f"{k}.jpg", format="PNG")  # lossless under VOC's name
        Image.fromarray(mask, mode="L").save(root / "SegmentationClass" / f"{k}.png")
        logits = OracleSegmenter()(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)["out"]
        matrix.update(logits, torch.from_numpy(mask.astype(np.int64))[None])
    (root / "ImageSets/Segmentation/val.txt").write_text("0\n1\n")
    stdout, values = run_eval(oracle(tmp_path, "segmentation"), "miou", "--ann", str(root))
    expected = matrix.summary()
    assert list(values) == list(expected)
    assert all(values[k] is None if np.isnan(v) else values[k] == pytest.approx(v, abs=1e-12)
               for k, v in expected.items())
    assert values["IoU/person"] == 1.0 and values["IoU/car"] == 1.0 and values["IoU/dog"] == 0.0
    assert values["IoU/cat"] is None and 0.5 < values["mIoU"] < 1
    assert stdout.startswith("semantic segmentation (%)\n") and "IoU/cat" in stdout
