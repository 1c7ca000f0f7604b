"""MMDetection -> torchvision conversion, checked against state dicts with MMDetection's exact key names and shapes.

The key tables below are derived from MMDetection's modules (mmdet/models): ``ResNet`` with ``Bottleneck`` (pytorch
style; norm layers named bn1..bn3 by ``build_norm_layer``; ``downsample`` = Sequential(conv, norm)), ``FPN``
(``lateral_convs`` / ``fpn_convs`` of mmcv ``ConvModule``, whose conv is ``.conv`` with a bias when there is no
norm), ``RPNHead`` (rpn_conv 3x3, rpn_cls/rpn_reg 1x1), ``Shared2FCBBoxHead`` (shared_fcs of nn.Linear, fc_cls C+1
with background last, fc_reg 4C) and ``RetinaHead`` (4 cls/reg ConvModules, retina_cls A*C, retina_reg A*4).
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from zoo import get_spec
from zoo.categories import get_categories
from zoo.checkpoint import UnsafeCheckpointError, load_weights
from zoo.convert import (
    CONVERTERS,
    check_num_classes,
    class_count,
    convert_file,
    convert_mmdet_faster_rcnn,
    convert_mmdet_retinanet,
    get_converter,
    load_mmdet_checkpoint,
)
from zoo.models.faster_rcnn import fasterrcnn_r50_fpn
from zoo.models.retinanet import retinanet_r50_fpn
from zoo.preprocess import Preprocessing

torch.set_num_threads(2)
SMALL = Preprocessing(min_size=128, max_size=160)
NUM = 7  # MMDetection classes in the synthetic checkpoints
FEW_PROPOSALS = {"rpn_post_nms_top_n_test": 100}  # keeps the box head cheap on 2 cores


# ----------------------------------------------------------------------------------------------------------------
# MMDetection key tables
# ----------------------------------------------------------------------------------------------------------------

def _bn(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{k}": (channels,) for k in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()}


def _conv_module(prefix: str, cout: int, cin: int, k: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.conv.weight": (cout, cin, k, k), f"{prefix}.conv.bias": (cout,)}


def mmdet_resnet50() -> dict[str, tuple[int, ...]]:
    shapes = {"backbone.conv1.weight": (64, 3, 7, 7)} | _bn("backbone.bn1", 64)
    inplanes = 64
    for stage, (blocks, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for b in range(blocks):
            p = f"backbone.layer{stage}.{b}"
            shapes |= {f"{p}.conv1.weight": (planes, inplanes, 1, 1)} | _bn(f"{p}.bn1", planes)
            shapes |= {f"{p}.conv2.weight": (planes, planes, 3, 3)} | _bn(f"{p}.bn2", planes)
            shapes |= {f"{p}.conv3.weight": (planes * 4, planes, 1, 1)} | _bn(f"{p}.bn3", planes * 4)
            if b == 0:
                shapes |= {f"{p}.downsample.0.weight": (planes * 4, inplanes, 1, 1)} | _bn(f"{p}.downsample.1",
                                                                                          planes * 4)
            inplanes = planes * 4
    return shapes


def mmdet_faster_rcnn_shapes(num_classes: int) -> dict[str, tuple[int, ...]]:
    shapes = mmdet_resnet50()
    for i, cin in enumerate((256, 512, 1024, 2048)):  # FPN num_outs=5, no extra convs (P6 = max-pool)
        shapes |= _conv_module(f"neck.lateral_convs.{i}", 256, cin, 1)
        shapes |= _conv_module(f"neck.fpn_convs.{i}", 256, 256, 3)
    shapes |= {"rpn_head.rpn_conv.weight": (256, 256, 3, 3), "rpn_head.rpn_conv.bias": (256,),
               "rpn_head.rpn_cls.weight": (3, 256, 1, 1), "rpn_head.rpn_cls.bias": (3,),
               "rpn_head.rpn_reg.weight": (12, 256, 1, 1), "rpn_head.rpn_reg.bias": (12,)}
    h = "roi_head.bbox_head"
    shapes |= {f"{h}.shared_fcs.0.weight": (1024, 256 * 7 * 7), f"{h}.shared_fcs.0.bias": (1024,),
               f"{h}.shared_fcs.1.weight": (1024, 1024), f"{h}.shared_fcs.1.bias": (1024,),
               f"{h}.fc_cls.weight": (num_classes + 1, 1024), f"{h}.fc_cls.bias": (num_classes + 1,),
               f"{h}.fc_reg.weight": (4 * num_classes, 1024), f"{h}.fc_reg.bias": (4 * num_classes,)}
    return shapes


def mmdet_retinanet_shapes(num_classes: int) -> dict[str, tuple[int, ...]]:
    shapes = mmdet_resnet50()
    for i, cin in enumerate((512, 1024, 2048)):  # start_level=1
        shapes |= _conv_module(f"neck.lateral_convs.{i}", 256, cin, 1)
        shapes |= _conv_module(f"neck.fpn_convs.{i}", 256, 256, 3)
    shapes |= _conv_module("neck.fpn_convs.3", 256, 2048, 3) | _conv_module("neck.fpn_convs.4", 256, 256, 3)
    for i in range(4):
        shapes |= _conv_module(f"bbox_head.cls_convs.{i}", 256, 256, 3)
        shapes |= _conv_module(f"bbox_head.reg_convs.{i}", 256, 256, 3)
    shapes |= {"bbox_head.retina_cls.weight": (9 * num_classes, 256, 3, 3),
               "bbox_head.retina_cls.bias": (9 * num_classes,), "bbox_head.retina_reg.weight": (36, 256, 3, 3),
               "bbox_head.retina_reg.bias": (36,)}
    return shapes


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values with sane magnitudes (fan-in scaled weights, BN statistics near identity)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        leaf = key.rsplit(".", 1)[1]
        if leaf == "num_batches_tracked":
            out[key] = torch.tensor(90000, dtype=torch.int64)
        elif leaf == "running_var":
            out[key] = torch.rand(shape, generator=g) + 0.5
        elif leaf == "weight" and len(shape) == 1:  # BN
            out[key] = torch.rand(shape, generator=g) * 0.5 + 0.5
        elif leaf == "weight":
            fan_in = int(torch.tensor(shape[1:]).prod())
            out[key] = torch.randn(shape, generator=g) / fan_in ** 0.5
        else:  # bias, running_mean
            out[key] = torch.randn(shape, generator=g) * 0.1
    return out


# ----------------------------------------------------------------------------------------------------------------
# Placing MMDetection weights by hand (module by module, independent of the converter)
# ----------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def _place_backbone(model, mm: dict, lateral: int, outputs: int) -> None:
    for key, tensor in model.backbone.body.state_dict().items():
        tensor.copy_(mm[f"backbone.{key}"])
    for i in range(lateral):
        model.backbone.fpn.inner_blocks[i][0].weight.copy_(mm[f"neck.lateral_convs.{i}.conv.weight"])
        model.backbone.fpn.inner_blocks[i][0].bias.copy_(mm[f"neck.lateral_convs.{i}.conv.bias"])
    for i in range(outputs):
        model.backbone.fpn.layer_blocks[i][0].weight.copy_(mm[f"neck.fpn_convs.{i}.conv.weight"])
        model.backbone.fpn.layer_blocks[i][0].bias.copy_(mm[f"neck.fpn_convs.{i}.conv.bias"])


@torch.no_grad()
def place_faster_rcnn(model, mm: dict, num: int) -> None:
    _place_backbone(model, mm, 4, 4)
    head = model.rpn.head
    for ours, theirs in ((head.conv[0][0], "rpn_conv"), (head.cls_logits, "rpn_cls"), (head.bbox_pred, "rpn_reg")):
        ours.weight.copy_(mm[f"rpn_head.{theirs}.weight"])
        ours.bias.copy_(mm[f"rpn_head.{theirs}.bias"])
    h = "roi_head.bbox_head"
    box_head = model.roi_heads.box_head
    for ours, theirs in ((box_head.fc6, "shared_fcs.0"), (box_head.fc7, "shared_fcs.1")):
        ours.weight.copy_(mm[f"{h}.{theirs}.weight"])
        ours.bias.copy_(mm[f"{h}.{theirs}.bias"])
    cls, reg = model.roi_heads.box_predictor.cls_score, model.roi_heads.box_predictor.bbox_pred
    cls.weight[0] = mm[f"{h}.fc_cls.weight"][num]
    cls.bias[0] = mm[f"{h}.fc_cls.bias"][num]
    reg.weight[:4] = 0
    reg.bias[:4] = 0
    for i in range(num):
        cls.weight[i + 1] = mm[f"{h}.fc_cls.weight"][i]
        cls.bias[i + 1] = mm[f"{h}.fc_cls.bias"][i]
        reg.weight[4 * (i + 1):4 * (i + 2)] = mm[f"{h}.fc_reg.weight"][4 * i:4 * (i + 1)]
        reg.bias[4 * (i + 1):4 * (i + 2)] = mm[f"{h}.fc_reg.bias"][4 * i:4 * (i + 1)]


@torch.no_grad()
def place_retinanet(model, mm: dict, num: int) -> None:
    _place_backbone(model, mm, 3, 3)
    extra = model.backbone.fpn.extra_blocks
    for ours, i in ((extra.p6, 3), (extra.p7, 4)):
        ours.weight.copy_(mm[f"neck.fpn_convs.{i}.conv.weight"])
        ours.bias.copy_(mm[f"neck.fpn_convs.{i}.conv.bias"])
    cls_head, reg_head = model.head.classification_head, model.head.regression_head
    for i in range(4):
        for ours, theirs in ((cls_head.conv[i][0], "cls_convs"), (reg_head.conv[i][0], "reg_convs")):
            ours.weight.copy_(mm[f"bbox_head.{theirs}.{i}.conv.weight"])
            ours.bias.copy_(mm[f"bbox_head.{theirs}.{i}.conv.bias"])
    reg_head.bbox_reg.weight.copy_(mm["bbox_head.retina_reg.weight"])
    reg_head.bbox_reg.bias.copy_(mm["bbox_head.retina_reg.bias"])
    for a in range(9):
        cls_head.cls_logits.weight[a * (num + 1)] = 0
        cls_head.cls_logits.bias[a * (num + 1)] = -10
        for c in range(num):
            cls_head.cls_logits.weight[a * (num + 1) + c + 1] = mm["bbox_head.retina_cls.weight"][a * num + c]
            cls_head.cls_logits.bias[a * (num + 1) + c + 1] = mm["bbox_head.retina_cls.bias"][a * num + c]


def _detect(model, images):
    with torch.no_grad():
        return model.eval()(images)


def _images(count: int = 1):
    g = torch.Generator().manual_seed(3)
    return [torch.rand(3, 96, 128, generator=g), torch.rand(3, 128, 80, generator=g)][:count]


# ----------------------------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------------------------

def test_faster_rcnn_converts_loads_strict_and_matches_hand_placement():
    mm = random_state(mmdet_faster_rcnn_shapes(NUM))
    converted = convert_mmdet_faster_rcnn(mm)
    assert not any(k.endswith("num_batches_tracked") for k in converted)
    torch.manual_seed(0)
    model = fasterrcnn_r50_fpn(NUM + 1, compat="mmdet", preprocessing=SMALL, **FEW_PROPOSALS)
    model.load_state_dict(converted, strict=True)
    torch.manual_seed(1)  # a differently initialised model: anything the hand placement misses would differ
    hand = fasterrcnn_r50_fpn(NUM + 1, compat="mmdet", preprocessing=SMALL, **FEW_PROPOSALS)
    place_faster_rcnn(hand, mm, NUM)
    for key, value in hand.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    images = _images(2)
    got, expected = _detect(model, images), _detect(hand, images)
    assert sum(len(d["boxes"]) for d in got) > 0
    for a, b in zip(got, expected):
        for k in ("boxes", "scores", "labels"):
            torch.testing.assert_close(a[k], b[k])


def test_retinanet_converts_loads_strict_and_matches_hand_placement():
    mm = random_state(mmdet_retinanet_shapes(NUM), seed=5)
    with torch.no_grad():  # make some anchors score above the threshold
        mm["bbox_head.retina_cls.bias"] += 2.5
    converted = convert_mmdet_retinanet(mm)
    torch.manual_seed(0)
    model = retinanet_r50_fpn(NUM + 1, compat="mmdet", preprocessing=SMALL)
    model.load_state_dict(converted, strict=True)
    torch.manual_seed(1)
    hand = retinanet_r50_fpn(NUM + 1, compat="mmdet", preprocessing=SMALL)
    place_retinanet(hand, mm, NUM)
    for key, value in hand.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    images = _images()
    got, expected = _detect(model, images), _detect(hand, images)
    assert sum(len(d["boxes"]) for d in got) > 0
    for a, b in zip(got, expected):
        for k in ("boxes", "scores", "labels"):
            torch.testing.assert_close(a[k], b[k])


def test_faster_rcnn_source_class_i_is_label_i_plus_1():
    source_class = NUM - 1  # the last foreground row, next to MMDetection's background row
    mm = random_state(mmdet_faster_rcnn_shapes(NUM), seed=2)
    h = "roi_head.bbox_head"
    mm[f"{h}.fc_cls.weight"].zero_()
    mm[f"{h}.fc_cls.bias"].zero_()
    mm[f"{h}.fc_cls.bias"][source_class] = 8.0  # every RoI: this class wins, background (last) and others do not
    model = fasterrcnn_r50_fpn(NUM + 1, compat="mmdet", preprocessing=SMALL, **FEW_PROPOSALS)
    model.load_state_dict(convert_mmdet_faster_rcnn(mm), strict=True)
    labels = torch.cat([d["labels"] for d in _detect(model, _images())])
    assert len(labels) > 0 and torch.all(labels == source_class + 1)


def test_retinanet_source_class_i_is_label_i_plus_1():
    source_class = 5
    mm = random_state(mmdet_retinanet_shapes(NUM), seed=2)
    mm["bbox_head.retina_cls.weight"].zero_()
    mm["bbox_head.retina_cls.bias"].fill_(-8.0)
    mm["bbox_head.retina_cls.bias"][source_class::NUM] = 2.0  # class 5 of every anchor
    model = retinanet_r50_fpn(NUM + 1, compat="mmdet", preprocessing=SMALL)
    model.load_state_dict(convert_mmdet_retinanet(mm), strict=True)
    labels = torch.cat([d["labels"] for d in _detect(model, _images())])
    assert len(labels) > 0 and torch.all(labels == source_class + 1)


def test_wrong_class_count_is_a_clear_error():
    converted = convert_mmdet_faster_rcnn(random_state(mmdet_faster_rcnn_shapes(80)))
    assert class_count(converted, "fasterrcnn_r50_fpn") == 81
    with pytest.raises(ValueError, match=r"checkpoint has 80 classes, model expects 365 \(objects365_v1\)"):
        check_num_classes(converted, "fasterrcnn_r50_fpn", 366, categories="objects365_v1")
    check_num_classes(converted, "fasterrcnn_r50_fpn", 81)
    retina = convert_mmdet_retinanet(random_state(mmdet_retinanet_shapes(NUM)))
    assert class_count(retina, "retinanet_r50_fpn") == NUM + 1
    with pytest.raises(ValueError, match=f"checkpoint has {NUM} classes, model expects 80"):
        check_num_classes(retina, "retinanet_r50_fpn", 81)


def test_foreign_layouts_are_refused_with_a_clear_error():
    mm = random_state(mmdet_faster_rcnn_shapes(NUM))
    with pytest.raises(ValueError, match="not an MMDetection RetinaNet"):
        convert_mmdet_retinanet(mm)
    mm["roi_head.mask_head.conv_logits.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="no place in it.*mask_head"):
        convert_mmdet_faster_rcnn(mm)
    agnostic = random_state(mmdet_faster_rcnn_shapes(NUM))
    agnostic["roi_head.bbox_head.fc_reg.weight"] = torch.zeros(4, 1024)
    agnostic["roi_head.bbox_head.fc_reg.bias"] = torch.zeros(4)
    with pytest.raises(ValueError, match="class-specific"):
        convert_mmdet_faster_rcnn(agnostic)
    with pytest.raises(ValueError, match="unknown converter"):
        get_converter("detectron2")
    assert set(CONVERTERS) == {"mmdet_faster_rcnn", "mmdet_retinanet"}


class Payload:
    """An arbitrary object: unpickling it would run code of the pickle's choosing."""


def test_checkpoint_reading_is_weights_only(tmp_path):
    good = tmp_path / "good.pth"
    state = {"a.weight": torch.ones(2)}
    torch.save({"meta": {"CLASSES": ("person", "car"), "mmdet_version": "2.26.0", "epoch": 12},
                "state_dict": state}, good)
    sd, meta = load_mmdet_checkpoint(good)
    assert meta["CLASSES"] == ("person", "car") and torch.equal(sd["a.weight"], state["a.weight"])
    torch.save(state, tmp_path / "bare.pth")
    assert load_mmdet_checkpoint(tmp_path / "bare.pth")[1] == {}
    bad = tmp_path / "bad.pth"
    torch.save({"meta": {"hook": Payload()}, "state_dict": state}, bad)
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        load_mmdet_checkpoint(bad)


def test_convert_file_with_a_registry_spec(tmp_path):
    spec = get_spec("retinanet_r50_obj365v1_1x")
    names = get_categories("objects365_v1")
    src = tmp_path / "retina.pth"
    torch.save({"meta": {"CLASSES": tuple(names)}, "state_dict": random_state(mmdet_retinanet_shapes(365))}, src)
    dst = tmp_path / "out" / "retina.safetensors"
    assert convert_file(src, dst, spec) == dst
    state_dict, meta = load_weights(dst)
    assert meta["arch"] == "retinanet_r50_fpn" and meta["model"] == spec.name
    assert json.loads(meta["categories"]) == list(names) and json.loads(meta["spec"])["name"] == spec.name
    retinanet_r50_fpn(366, compat="mmdet").load_state_dict(state_dict, strict=True)
    assert sorted(p.name for p in dst.parent.iterdir()) == ["retina.safetensors"]

    v2 = tmp_path / "v2.pth"
    torch.save({"meta": {"CLASSES": get_categories("objects365_v2")},
                "state_dict": random_state(mmdet_retinanet_shapes(365))}, v2)
    with pytest.raises(ValueError, match="objects365_v2"):
        convert_file(v2, tmp_path / "v2.safetensors", spec)
    assert not (tmp_path / "v2.safetensors").exists()


def test_convert_file_by_name_checks_class_count_before_writing(tmp_path):
    src = tmp_path / "frcnn.pth"
    torch.save({"state_dict": random_state(mmdet_faster_rcnn_shapes(NUM))}, src)
    dst = tmp_path / "frcnn.safetensors"
    metadata = {"arch": "fasterrcnn_r50_fpn", "categories": json.dumps([f"c{i}" for i in range(NUM)])}
    convert_file(src, dst, "mmdet_faster_rcnn", metadata=metadata)
    assert load_file(str(dst))["roi_heads.box_predictor.cls_score.weight"].shape == (NUM + 1, 1024)
    wrong = {"arch": "fasterrcnn_r50_fpn", "categories": json.dumps(["a", "b"])}
    with pytest.raises(ValueError, match=f"checkpoint has {NUM} classes, model expects 2"):
        convert_file(src, tmp_path / "wrong.safetensors", convert_mmdet_faster_rcnn, metadata=wrong)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frcnn.pth", "frcnn.safetensors"]
