"""torchvision's private names that zoo, training and export rely on, each with the behaviour we use: a torchvision
upgrade that renames or changes one fails here, naming it, rather than somewhere deep in a build or an export.

- ``torchvision.ops.poolers._setup_scales``: export.graphs (the RoIAlign levels of a fixed-size Faster R-CNN graph).
- ``GeneralizedRCNNTransform._skip_resize``: training.engine (the data pipeline has resized already).
- ``RetinaNetRegressionHead._loss_type``: training.demo (GIoU box loss).
- ``torchvision.models.detection.backbone_utils._resnet_fpn_extractor``: zoo.models.faster_rcnn and retinanet.
- ``torchvision.models._utils.IntermediateLayerGetter``: zoo.models.pspnet.
"""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign


def test_setup_scales_matches_the_pooler_and_the_graph_uses_public_top_n():
    from torchvision.ops.poolers import _setup_scales

    from export.graphs import _inference_top_n

    features = OrderedDict((n, torch.rand(1, 4, 64 // s, 64 // s)) for n, s in (("0", 4), ("1", 8), ("2", 16)))
    pooler = MultiScaleRoIAlign(["0", "1", "2"], 7, 2)
    pooler(features, [torch.tensor([[4.0, 4.0, 40.0, 40.0]])], [(64, 64)])
    scales, mapper = _setup_scales(list(features.values()), [(64, 64)], pooler.canonical_scale,
                                   pooler.canonical_level)
    assert scales == pooler.scales == [0.25, 0.125, 0.0625]
    assert (mapper.k_min, mapper.k_max, mapper.s0, mapper.lvl0, mapper.eps) == \
        (pooler.map_levels.k_min, pooler.map_levels.k_max, 224, 4, 1e-6)

    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3, rpn_pre_nms_top_n_test=123,
                                    rpn_post_nms_top_n_test=45).train()
    assert _inference_top_n(model.rpn) == (123, 45) and model.rpn.training


def test_skip_resize_switch_skips_the_training_resize():
    from training.engine import SKIP_RESIZE_ATTR

    transform = GeneralizedRCNNTransform(min_size=64, max_size=64, image_mean=[0.0] * 3, image_std=[1.0] * 3)
    assert getattr(transform, SKIP_RESIZE_ATTR) is False
    image = torch.rand(3, 32, 48)
    target = {"boxes": torch.tensor([[1.0, 2.0, 10.0, 12.0]]), "labels": torch.tensor([1])}
    transform.train()
    resized, _ = transform([image], [dict(target)])
    assert resized.image_sizes == [(42, 64)]
    setattr(transform, SKIP_RESIZE_ATTR, True)
    kept, targets = transform([image], [dict(target)])
    assert kept.image_sizes == [(32, 48)] and torch.equal(targets[0]["boxes"], target["boxes"])
    transform.eval()
    assert transform([image])[0].image_sizes == [(42, 64)]


def test_retinanet_box_loss_switch():
    from training.demo import build_model
    from zoo.models.light import retinanet_lite0_fpn

    torch.manual_seed(0)
    assert retinanet_lite0_fpn(2).head.regression_head._loss_type == "l1"
    model = build_model(None, "giou").train()
    assert model.head.regression_head._loss_type == "giou"
    image = torch.rand(3, 128, 128)
    target = {"boxes": torch.tensor([[10.0, 12.0, 40.0, 50.0], [60.0, 60.0, 90.0, 100.0]]),
              "labels": torch.tensor([1, 1])}
    giou = float(model([image], [target])["bbox_regression"].detach())
    model.head.regression_head._loss_type = "l1"
    assert float(model([image], [target])["bbox_regression"].detach()) != pytest.approx(giou)


def test_resnet_fpn_extractor_and_intermediate_layer_getter():
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

    body = resnet18(weights=None)
    fpn = _resnet_fpn_extractor(body, 3)
    out = fpn(torch.rand(1, 3, 64, 64))
    assert list(out) == ["0", "1", "2", "3", "pool"] and fpn.out_channels == 256
    assert not body.layer1[0].conv1.weight.requires_grad and body.layer2[0].conv1.weight.requires_grad
    getter = IntermediateLayerGetter(resnet18(weights=None), return_layers={"layer3": "aux", "layer4": "out"})
    feats = getter(torch.rand(1, 3, 64, 64))
    assert list(feats) == ["aux", "out"] and feats["out"].shape == (1, 512, 2, 2)
    assert isinstance(getter, nn.ModuleDict) and "fc" not in dict(getter.named_children())
