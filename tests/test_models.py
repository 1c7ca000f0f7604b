"""Builders: documented outputs, and what compat="mmdet" changes (RoIAlign, anchors, P6/P7)."""
from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from zoo.models import build
from zoo.models.faster_rcnn import (
    MMDetRoIAlign,
    UnroundedAnchorGenerator,
    fasterrcnn_r50_fpn,
)
from zoo.models.pspnet import pspnet_r50
from zoo.models.retinanet import MMDetP6P7, retinanet_r50_fpn
from zoo.preprocess import Preprocessing

torch.set_num_threads(2)
SMALL = Preprocessing(min_size=128, max_size=192, score_threshold=0.0, max_detections=20)


def _check_detections(out: list[dict], images: list[torch.Tensor], num_classes: int) -> None:
    assert len(out) == len(images)
    for det, image in zip(out, images):
        n = det["boxes"].shape[0]
        assert det["boxes"].shape == (n, 4) and det["scores"].shape == (n,) and det["labels"].shape == (n,)
        assert det["labels"].dtype == torch.int64 and n <= SMALL.max_detections
        if n:
            h, w = image.shape[-2:]
            assert det["boxes"][:, 0::2].max() <= w and det["boxes"][:, 1::2].max() <= h
            assert det["labels"].min() >= 1 and det["labels"].max() < num_classes


@pytest.mark.parametrize("compat", ["torchvision", "mmdet"])
def test_faster_rcnn_outputs(compat):
    torch.manual_seed(0)
    model = fasterrcnn_r50_fpn(6, compat=compat, preprocessing=SMALL, rpn_post_nms_top_n_test=100).eval()
    images = [torch.rand(3, 100, 150), torch.rand(3, 160, 90)]
    with torch.no_grad():
        out = model(images)
    _check_detections(out, images, 6)
    assert len(out[0]["boxes"]) > 0
    assert model.transform.min_size == (128,) and model.transform.max_size == 192
    assert model.roi_heads.detections_per_img == 20
    assert model.roi_heads.box_predictor.cls_score.out_features == 6


@pytest.mark.parametrize("compat", ["torchvision", "mmdet"])
def test_retinanet_outputs_and_background_row(compat):
    torch.manual_seed(0)
    model = retinanet_r50_fpn(4, compat=compat, preprocessing=SMALL).eval()
    images = [torch.rand(3, 120, 140)]
    with torch.no_grad():
        out = model(images)
    _check_detections(out, images, 4)
    assert len(out[0]["boxes"]) == SMALL.max_detections  # score threshold 0: the top 20 are kept
    cls_logits = model.head.classification_head.cls_logits
    assert cls_logits.out_channels == 9 * 4
    background = torch.arange(0, 36, 4)
    assert torch.all(cls_logits.bias[background] == -10.0)
    assert torch.all(cls_logits.weight[background] == 0.0)
    assert torch.all(cls_logits.bias[background + 1] > -10.0)
    assert model.topk_candidates == 1000 and model.nms_thresh == 0.5


def test_retinanet_default_test_settings_are_mmdetections():
    model = retinanet_r50_fpn(366)
    assert (model.score_thresh, model.nms_thresh, model.detections_per_img, model.topk_candidates) == (
        0.05, 0.5, 100, 1000)
    assert model.transform.min_size == (800,) and model.transform.max_size == 1333


def test_faster_rcnn_compat_switches_roi_align_and_anchors():
    tv = fasterrcnn_r50_fpn(3)
    mm = fasterrcnn_r50_fpn(3, compat="mmdet")
    assert type(tv.roi_heads.box_roi_pool) is MultiScaleRoIAlign and tv.roi_heads.box_roi_pool.sampling_ratio == 2
    assert isinstance(mm.roi_heads.box_roi_pool, MMDetRoIAlign) and mm.roi_heads.box_roi_pool.sampling_ratio == 0
    assert type(tv.rpn.anchor_generator) is AnchorGenerator
    assert isinstance(mm.rpn.anchor_generator, UnroundedAnchorGenerator)
    # stride 4, scale 8, ratio 0.5 (h/w): w = 32 * sqrt(2) = 45.25; torchvision rounds the half-width 22.63 to 23
    half_w = 32 * math.sqrt(2) / 2
    assert tv.rpn.anchor_generator.cell_anchors[0][0, 2].item() == 23.0
    assert mm.rpn.anchor_generator.cell_anchors[0][0, 2].item() == pytest.approx(half_w, rel=1e-6)
    assert mm.rpn._post_nms_top_n["training"] == 1000 and tv.rpn._post_nms_top_n["training"] == 2000


def test_mmdet_roi_align_is_aligned_adaptive_at_mmdetection_level():
    torch.manual_seed(0)
    pool = MMDetRoIAlign(["0", "1", "2", "3"])
    feats = {str(i): torch.randn(1, 8, 256 // s, 256 // s) for i, s in enumerate((4, 8, 16, 32))}
    # sqrt(area) 100 -> floor(log2(100 / 56)) = 0 (stride 4); 240 -> 2 (stride 16); 250 -> 2; 20 -> clamp 0
    boxes = torch.tensor([[10.0, 20.0, 110.0, 120.0], [0.0, 0.0, 240.0, 240.0], [3.5, 1.0, 253.5, 251.0],
                          [5.0, 5.0, 25.0, 25.0]])
    out = pool(feats, [boxes], [(256, 256)])
    for box, level in zip(boxes, (0, 2, 2, 0)):
        stride = 4 * 2**level
        expected = roi_align(feats[str(level)], [box[None]], 7, 1.0 / stride, sampling_ratio=0, aligned=True)
        got = out[(boxes == box).all(1)]
        torch.testing.assert_close(got, expected)
    unaligned = roi_align(feats["0"], [boxes[:1]], 7, 0.25, sampling_ratio=2, aligned=False)
    assert not torch.allclose(out[:1], unaligned)


def test_retinanet_compat_p6_from_c5_without_relu_and_unrounded_anchors():
    tv = retinanet_r50_fpn(3)
    mm = retinanet_r50_fpn(3, compat="mmdet")
    assert type(tv.backbone.fpn.extra_blocks) is LastLevelP6P7 and tv.backbone.fpn.extra_blocks.use_P5
    extra = mm.backbone.fpn.extra_blocks
    assert isinstance(extra, MMDetP6P7) and extra.p6.in_channels == 2048
    torch.manual_seed(0)
    p = [torch.randn(1, 256, 8, 8)]
    c = [torch.randn(1, 2048, 8, 8)]
    with torch.no_grad():
        outs, names = extra(list(p), list(c), ["0"])
        p6 = extra.p6(c[0])
        assert names == ["0", "p6", "p7"]
        torch.testing.assert_close(outs[1], p6)
        torch.testing.assert_close(outs[2], extra.p7(p6))  # no ReLU between P6 and P7
        assert not torch.allclose(outs[2], extra.p7(p6.relu()))
    # level 0 (stride 8), ratio 1: widths 32 * 2^(k/3) unrounded vs torchvision's rounded 32, 40, 50
    mm_w = [(a[2] - a[0]).item() for a in mm.anchor_generator.cell_anchors[0][3:6]]
    tv_w = [(a[2] - a[0]).item() for a in tv.anchor_generator.cell_anchors[0][3:6]]
    assert mm_w == pytest.approx([32.0, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)], rel=1e-6)
    assert tv_w == [32.0, 40.0, 50.0]


def test_pspnet_outputs_at_input_size():
    torch.manual_seed(0)
    model = pspnet_r50(21, aux=True).eval()
    x = torch.rand(2, 3, 65, 97)
    with torch.no_grad():
        out = model(x)
    assert set(out) == {"out", "aux"}
    assert out["out"].shape == (2, 21, 65, 97) and out["aux"].shape == (2, 21, 65, 97)
    assert pspnet_r50(150).classifier[5].out_channels == 150
    assert "aux_classifier.4.weight" not in pspnet_r50(150).state_dict()
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.rand(3, 32, 32))


def test_pspnet_normalises_inside():
    torch.manual_seed(0)
    model = pspnet_r50(5).eval()
    x = torch.rand(1, 3, 40, 48)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        features = model.backbone((x - mean) / std)["out"]
        assert features.shape[-2:] == (5, 6)  # dilated layer3/layer4: output stride 8
        expected = torch.nn.functional.interpolate(model.classifier(features), size=(40, 48), mode="bilinear")
        torch.testing.assert_close(model(x)["out"], expected)
    assert model.backbone.layer4[0].conv2.dilation == (2, 2)
    with torch.device("meta"):
        on_meta = pspnet_r50(5)
    on_meta.load_state_dict(model.state_dict(), assign=True)
    assert not any(t.is_meta for t in (*on_meta.parameters(), *on_meta.buffers()))
    with torch.no_grad():
        torch.testing.assert_close(on_meta.eval()(x)["out"], model(x)["out"])


def test_pretrained_backbone_is_read_from_a_local_file(tmp_path):
    from torchvision.models import resnet50

    torch.manual_seed(1)
    weights = resnet50(weights=None).state_dict()
    path = tmp_path / "r50.pth"
    torch.save(weights, path)
    model = fasterrcnn_r50_fpn(2, pretrained_backbone=path)
    torch.testing.assert_close(model.backbone.body.layer3[1].conv2.weight, weights["layer3.1.conv2.weight"])
    seg = pspnet_r50(2, pretrained_backbone=path)
    torch.testing.assert_close(seg.backbone.layer1[0].bn1.running_var, weights["layer1.0.bn1.running_var"])
    torch.save({"conv1.weight": weights["conv1.weight"]}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="missing keys"):
        fasterrcnn_r50_fpn(2, pretrained_backbone=tmp_path / "partial.pth")
    torch.save(resnet50(weights=None, width_per_group=32).state_dict(), tmp_path / "narrow.pth")
    with pytest.raises(ValueError, match="of another shape"):
        fasterrcnn_r50_fpn(2, pretrained_backbone=tmp_path / "narrow.pth")
    with pytest.raises(FileNotFoundError):
        fasterrcnn_r50_fpn(2, pretrained_backbone=tmp_path / "absent.pth")


def test_registered_builders_and_bad_arguments():
    model = build("retinanet_r50_fpn", 3, compat="mmdet")
    assert isinstance(model.backbone.fpn.extra_blocks, MMDetP6P7)
    with pytest.raises(ValueError, match="compat"):
        build("fasterrcnn_r50_fpn", 3, compat="detectron2")
    with pytest.raises(ValueError, match="compat"):
        build("pspnet_r50", 3, compat="mmdet")
    with pytest.raises(ValueError, match="background"):
        retinanet_r50_fpn(1)


@pytest.mark.parametrize("arch", ["fasterrcnn_r50_fpn", "retinanet_r50_fpn"])
def test_trainable_batchnorm_for_syncbn_pretraining(arch):
    from torchvision.ops import FrozenBatchNorm2d

    frozen = build(arch, 3)
    trainable = build(arch, 3, norm="bn")
    assert any(isinstance(m, FrozenBatchNorm2d) for m in frozen.backbone.body.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.backbone.body.modules())
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(trainable)
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.backbone.body.modules())
    with pytest.raises(ValueError, match="norm must be one of"):
        build(arch, 3, norm="group")
