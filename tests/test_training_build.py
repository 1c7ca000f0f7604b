"""training.build: what ``python -m training train`` builds from a recipe before the loop."""
from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path

import pytest
import torch
from test_training_tiny import ARCH

from training.build import apply_lr_rule, build_model, load_state_dict, write_run_info
from training.distributed import Context
from training.recipes import Recipe

NAMES = ("person", "car", "dog")


def _recipe(**changes) -> Recipe:
    base = Recipe(name="tiny", source="test", arch=ARCH, categories=None, min_sizes=(64, 96), max_size=128)
    return dataclasses.replace(base, **changes)


def test_scratch_model_resizes_to_the_recipe_and_run_json_records_it(tmp_path: Path):
    built = build_model(_recipe(), types.SimpleNamespace(categories=NAMES), progress=False)
    assert built.arch == ARCH and built.categories == NAMES and built.build_kwargs == {}
    assert built.model.head.classification_head.num_classes == len(NAMES) + 1
    assert (built.preprocessing.min_size, built.preprocessing.max_size) == (96, 128)
    assert (built.model.transform.min_size, built.model.transform.max_size) == ((96,), 128)
    write_run_info(tmp_path, built, _recipe(train_ann="/data/train.json"), Context(0, 1, 0, torch.device("cpu")))
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["arch"] == ARCH and run["categories"] == list(NAMES) and run["datasets"] == ["train.json"]
    assert run["preprocessing"]["min_size"] == 96 and run["recipe"]["name"] == "tiny"


def test_sync_bn_pretraining_asks_for_trainable_batchnorm():
    built = build_model(_recipe(sync_bn=True), types.SimpleNamespace(categories=NAMES), progress=False)
    assert built.build_kwargs == {"norm": "bn"}


def test_lr_rule_l2norm_scales_by_the_backbone_norm_ratio(tmp_path: Path):
    model = torch.nn.Module()
    model.backbone = torch.nn.Module()
    model.backbone.body = torch.nn.Conv2d(3, 4, 3)
    imagenet = {k: 2 * v.detach() for k, v in model.backbone.body.state_dict().items()}
    with pytest.raises(SystemExit, match="needs init=<pretrained model> and imagenet_weights"):
        apply_lr_rule(_recipe(lr_rule="l2norm"), model)
    with pytest.raises(SystemExit, match="unknown lr_rule 'linear'"):
        apply_lr_rule(_recipe(lr_rule="linear"), model)
    assert apply_lr_rule(_recipe(lr=0.02), model).lr == 0.02
    foreign = tmp_path / "imagenet.pth"
    torch.save({"state_dict": imagenet}, foreign)
    assert set(load_state_dict(str(foreign))) == set(imagenet)
    scaled = apply_lr_rule(_recipe(lr=0.02, lr_rule="l2norm", init="x", imagenet_weights=str(foreign)), model)
    assert scaled.lr == pytest.approx(0.01) and scaled.lr_rule == "none"
