"""Registry facts and the zoo CLI's listing: names resolve, every entry is complete and consistent."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

import zoo
from zoo.categories import get_categories
from zoo.models import list_architectures


def test_six_mmdetection_checkpoints_with_published_ap():
    expected = {  # box AP from MMDetection configs/objects365/README.md
        "fpn_r50_obj365v1_1x": 19.6, "fpn_r50_obj365v1_syncbn_1350k": 22.3, "fpn_r50_obj365v2_1x": 19.8,
        "retinanet_r50_obj365v1_1x": 14.8, "retinanet_r50_obj365v1_syncbn_1350k": 18.0,
        "retinanet_r50_obj365v2_1x": 16.7,
    }
    for name, ap in expected.items():
        spec = zoo.get_spec(name)
        assert spec.metrics[0].value == ap and spec.metrics[0].name == "box AP"
        assert spec.source.startswith("https://download.openmmlab.com/mmdetection/v2.0/objects365/")
        # MMDetection's publish_model.py appends the first 8 hex digits of the sha256 to the file name.
        assert spec.source.endswith(f"-{spec.sha256}.pth") and re.fullmatch("[0-9a-f]{8}", spec.sha256)
        assert spec.categories == ("objects365_v2" if "v2" in name else "objects365_v1")
        assert spec.build_kwargs == {"compat": "mmdet"}


def test_short_names_are_the_best_of_each_architecture():
    for short, arch in (("fpn_r50_obj365", "fasterrcnn_r50_fpn"), ("retinanet_r50_obj365", "retinanet_r50_fpn")):
        spec = zoo.get_spec(short)
        peers = [zoo.get_spec(n) for n in zoo.list_models("*obj365v*") if zoo.get_spec(n).arch == arch]
        best = max(peers, key=lambda s: s.metrics[0].value)
        assert spec.alias_of == best.name and spec.source == best.source and spec.sha256 == best.sha256


@pytest.mark.parametrize("name", zoo.list_models())
def test_every_spec_is_consistent(name):
    spec = zoo.get_spec(name)
    assert spec.arch in list_architectures()
    assert spec.num_outputs == len(get_categories(spec.categories)) + (
        1 if spec.task == "detection" or spec.background else 0)
    assert spec.license and spec.recipe and spec.description
    if not spec.published:
        assert "No published weights" in spec.description
        with pytest.raises(zoo.NoPublishedWeightsError, match="python -m training train"):
            zoo.load(name, pretrained=True)


def test_unknown_name_lists_close_matches():
    with pytest.raises(zoo.UnknownModelError, match="did you mean fpn_r50_obj365"):
        zoo.get_spec("fpn_r50_obj356")


def test_list_models_pattern():
    assert zoo.list_models("retinanet_*") == sorted(n for n in zoo.list_models() if n.startswith("retinanet_"))
    assert "pspnet_r50_obj365_voc" in zoo.list_models("*voc")


def test_cli_list_and_unknown_name():
    out = subprocess.run([sys.executable, "-m", "zoo", "list", "fpn*"], capture_output=True, text=True, check=True)
    assert "fpn_r50_obj365v1_syncbn_1350k" in out.stdout and "box AP 22.3" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "zoo", "info", "fpn_r50"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "did you mean" in bad.stderr and "Traceback" not in bad.stderr


def test_unpublished_targets_name_a_real_training_recipe():
    from training.recipes import RECIPES

    for name in zoo.list_models():
        spec = zoo.get_spec(name)
        if not spec.published:
            recipe = re.search(r"python -m training train (\S+) --init (\S+)", spec.recipe)
            assert recipe and recipe.group(1) in RECIPES, spec.recipe
            assert zoo.get_spec(recipe.group(2)).published
