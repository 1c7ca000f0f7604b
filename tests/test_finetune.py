"""``training.finetune`` as a user meets it: a tiny VOC dataset with one class COCO knows ("person") and three it
does not, a short CPU run from the embedded default, then the model loads by name and finds the new classes."""
from __future__ import annotations

import json

import pytest
import torch
from tiny_detection_data import CLASSES, write_voc

import training
import zoo


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    path = tmp_path / "registry.json"
    monkeypatch.setenv("O365ZOO_REGISTRY", str(path))
    return path


def test_head_transfer_starts_the_known_class_from_coco_and_the_others_fresh():
    coco = zoo.load("yolox_nano_coco")
    model = zoo.load("yolox_nano_coco", categories=list(CLASSES))
    for level in range(3):
        src, dst = coco.head.cls_preds[level], model.head.cls_preds[level]
        assert torch.equal(dst.weight[CLASSES.index("person")], src.weight[coco.categories.index("person")])
        fresh = dst.bias[[CLASSES.index(c) for c in CLASSES if c != "person"]]
        assert torch.allclose(fresh, torch.full_like(fresh, -4.59512), atol=1e-4)  # prior probability 0.01


@pytest.mark.slow
def test_finetune_on_voc_then_load_by_name(tmp_path, registry, capsys):
    torch.set_num_threads(2)
    root = write_voc(tmp_path / "voc")
    result = training.finetune(root, val=root, epochs=40, eval_every=10, name="space_things", out=tmp_path / "run",
                               progress=False)
    plan = capsys.readouterr().out
    assert "1 of 4 classes mapped from yolox_nano_coco (person<-person)" in plan
    assert "3 initialised fresh" in plan and "40 iterations" in plan and "ETA" in plan
    assert "CPU run: starting from the small yolox_nano_coco" in plan
    assert result.mapped == {"person": "person"} and sorted(result.fresh) == ["helmet", "rocket", "space shuttle"]
    assert len(result.history) == 4
    assert result.best_ap == pytest.approx(max(row["AP"] for row in result.history), abs=1e-5)
    assert result.best_ap > 0.3

    assert "space_things" in json.loads(registry.read_text())["models"]
    assert "space_things" in zoo.list_models()
    model = zoo.load("space_things")
    assert set(model.categories) == set(CLASSES)

    def names(photo: str, floor: float) -> set[str]:
        found = zoo.detect(model, [root / "JPEGImages" / photo])[0]
        return {model.categories[int(label) - 1] for label, score in zip(found["labels"], found["scores"])
                if score > floor}

    assert "rocket" in names("rocket.jpg", 0.05)
    assert {"helmet", "space shuttle"} & names("astronaut.jpg", 0.2)  # new classes, learnt from 4 photos
    assert "person" in names("astronaut.jpg", 0.1)  # the class kept from COCO
    card = (tmp_path / "run" / "space_things.md").read_text()
    assert 'zoo.load("space_things")' in card and "- coco" not in card
