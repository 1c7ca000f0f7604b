"""Class-head transfer through a category mapping: mapped rows copied, background kept, the rest fresh."""
from __future__ import annotations

import math

import pytest
import torch

from zoo.categories import get_categories, map_indices
from zoo.convert import transfer_head
from zoo.models.faster_rcnn import fasterrcnn_r50_fpn
from zoo.models.pspnet import pspnet_r50
from zoo.models.retinanet import retinanet_r50_fpn

torch.set_num_threads(2)
DST = ["person", "car", "not a real class"]  # -> v1 person, v1 car, unmapped
CLS, REG = "roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.bbox_pred"
LOGITS = "head.classification_head.cls_logits"


@pytest.fixture(scope="module")
def frcnn_o365() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return fasterrcnn_r50_fpn(366).state_dict()


@pytest.fixture(scope="module")
def retina_o365() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    sd = retinanet_r50_fpn(366).state_dict()
    sd[f"{LOGITS}.bias"] += torch.randn_like(sd[f"{LOGITS}.bias"])  # distinct rows to recognise
    return sd


def _o365_person_and_car() -> tuple[int, int]:
    names = get_categories("objects365_v1")
    return names.index("person"), names.index("car")


def test_mapping_fixture_is_what_the_tests_assume():
    assert map_indices("objects365_v1", DST) == [*_o365_person_and_car(), None]


def test_faster_rcnn_transfer_copies_mapped_rows_and_keeps_background(frcnn_o365):
    person, car = _o365_person_and_car()
    out = transfer_head(frcnn_o365, "fasterrcnn_r50_fpn", map_indices("objects365_v1", DST))
    fasterrcnn_r50_fpn(len(DST) + 1).load_state_dict(out, strict=True)
    for suffix in ("weight", "bias"):
        src_cls, dst_cls = frcnn_o365[f"{CLS}.{suffix}"], out[f"{CLS}.{suffix}"]
        src_reg, dst_reg = frcnn_o365[f"{REG}.{suffix}"], out[f"{REG}.{suffix}"]
        assert dst_cls.shape[0] == 4 and dst_reg.shape[0] == 16
        torch.testing.assert_close(dst_cls[0], src_cls[0])  # background
        torch.testing.assert_close(dst_cls[1], src_cls[person + 1])
        torch.testing.assert_close(dst_cls[2], src_cls[car + 1])
        torch.testing.assert_close(dst_reg[0:4], src_reg[0:4])
        torch.testing.assert_close(dst_reg[4:8], src_reg[4 * (person + 1):4 * (person + 2)])
        torch.testing.assert_close(dst_reg[8:12], src_reg[4 * (car + 1):4 * (car + 2)])
    assert not torch.isclose(out[f"{CLS}.weight"][3], frcnn_o365[f"{CLS}.weight"]).all(-1).any()
    # the unmapped class is initialised as the builder's (nn.Linear: uniform within 1/sqrt(fan_in))
    fresh = out[f"{CLS}.weight"][3]
    assert fresh.abs().max() <= 1 / math.sqrt(1024) and fresh.std() > 0.5 / math.sqrt(3 * 1024)
    torch.testing.assert_close(out["roi_heads.box_head.fc6.weight"], frcnn_o365["roi_heads.box_head.fc6.weight"])


def test_coco_person_takes_objects365_person(frcnn_o365):
    person, _ = _o365_person_and_car()
    out = transfer_head(frcnn_o365, "fasterrcnn_r50_fpn", map_indices("objects365_v1", "coco"))
    assert get_categories("coco")[0] == "person"
    assert out[f"{CLS}.weight"].shape[0] == 81
    torch.testing.assert_close(out[f"{CLS}.weight"][1], frcnn_o365[f"{CLS}.weight"][person + 1])


def test_fresh_rows_are_seeded_and_leave_the_global_rng_alone(frcnn_o365):
    mapping = map_indices("objects365_v1", DST)
    state = torch.random.get_rng_state()
    a = transfer_head(frcnn_o365, "fasterrcnn_r50_fpn", mapping, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = transfer_head(frcnn_o365, "fasterrcnn_r50_fpn", mapping, seed=1)
    c = transfer_head(frcnn_o365, "fasterrcnn_r50_fpn", mapping, seed=2)
    torch.testing.assert_close(a[f"{CLS}.weight"], b[f"{CLS}.weight"])
    assert not torch.allclose(a[f"{CLS}.weight"][3], c[f"{CLS}.weight"][3])
    torch.testing.assert_close(a[f"{CLS}.weight"][:3], c[f"{CLS}.weight"][:3])


def test_reinit_replaces_the_whole_class_head(frcnn_o365):
    out = transfer_head(frcnn_o365, "fasterrcnn_r50_fpn", map_indices("objects365_v1", DST), mode="reinit")
    src = frcnn_o365[f"{CLS}.weight"]
    for row in out[f"{CLS}.weight"]:
        assert not torch.isclose(row, src).all(-1).any()
    assert not torch.isclose(out[f"{REG}.weight"][:4], frcnn_o365[f"{REG}.weight"][:4]).all()
    torch.testing.assert_close(out["rpn.head.cls_logits.weight"], frcnn_o365["rpn.head.cls_logits.weight"])
    torch.testing.assert_close(out["backbone.body.layer4.2.conv3.weight"],
                               frcnn_o365["backbone.body.layer4.2.conv3.weight"])


def test_retinanet_transfer_per_anchor(retina_o365):
    person, car = _o365_person_and_car()
    out = transfer_head(retina_o365, "retinanet_r50_fpn", map_indices("objects365_v1", DST))
    retinanet_r50_fpn(len(DST) + 1).load_state_dict(out, strict=True)
    src_b, dst_b = retina_o365[f"{LOGITS}.bias"], out[f"{LOGITS}.bias"]
    src_w, dst_w = retina_o365[f"{LOGITS}.weight"], out[f"{LOGITS}.weight"]
    assert dst_w.shape[0] == 9 * 4
    prior = -math.log((1 - 0.01) / 0.01)
    for a in range(9):
        torch.testing.assert_close(dst_b[a * 4], src_b[a * 366])  # background row kept
        torch.testing.assert_close(dst_w[a * 4 + 1], src_w[a * 366 + person + 1])
        torch.testing.assert_close(dst_b[a * 4 + 2], src_b[a * 366 + car + 1])
        assert dst_b[a * 4 + 3].item() == pytest.approx(prior)  # fresh, as the builder initialises it
        assert 0 < dst_w[a * 4 + 3].std() < 0.02
    torch.testing.assert_close(out["head.regression_head.bbox_reg.weight"],
                               retina_o365["head.regression_head.bbox_reg.weight"])


def test_retinanet_reinit_keeps_the_background_convention(retina_o365):
    out = transfer_head(retina_o365, "retinanet_r50_fpn", map_indices("objects365_v1", DST), mode="reinit")
    bias = out[f"{LOGITS}.bias"].view(9, 4)
    assert torch.all(bias[:, 0] == -10.0)
    assert torch.allclose(bias[:, 1:], torch.tensor(-math.log(99.0)))


def test_pspnet_from_a_source_without_background():
    torch.manual_seed(0)
    ade = pspnet_r50(150, aux=True).state_dict()
    for key in ("classifier.5.weight", "classifier.5.bias", "aux_classifier.4.bias"):
        ade[key] = torch.randn_like(ade[key])
    mapping = map_indices("ade20k", "voc")
    person_src, person_dst = get_categories("ade20k").index("person"), get_categories("voc").index("person")
    assert mapping[person_dst] == person_src
    out = transfer_head(ade, "pspnet_r50", mapping, src_background=False, dst_background=True)
    pspnet_r50(21, aux=True).load_state_dict(out, strict=True)
    w, b = out["classifier.5.weight"], out["classifier.5.bias"]
    torch.testing.assert_close(w[person_dst + 1], ade["classifier.5.weight"][person_src])
    torch.testing.assert_close(out["aux_classifier.4.bias"][person_dst + 1], ade["aux_classifier.4.bias"][person_src])
    assert b[0].item() == 0.0 and 0 < w[0].std() < 0.02  # background: fresh (init std 0.01, bias 0)
    unmapped = mapping.index(None)
    assert b[unmapped + 1].item() == 0.0
    back = transfer_head(out, "pspnet_r50", [person_dst], src_background=True, dst_background=False)
    torch.testing.assert_close(back["classifier.5.weight"][0], ade["classifier.5.weight"][person_src])
    assert back["classifier.5.weight"].shape[0] == 1


def test_bad_requests_are_clear_errors(frcnn_o365):
    with pytest.raises(ValueError, match="source class 400 but the fasterrcnn_r50_fpn checkpoint has 365"):
        transfer_head(frcnn_o365, "fasterrcnn_r50_fpn", [0, 400])
    with pytest.raises(ValueError, match="mode"):
        transfer_head(frcnn_o365, "fasterrcnn_r50_fpn", [0], mode="head")
    with pytest.raises(ValueError, match="background"):
        transfer_head(frcnn_o365, "fasterrcnn_r50_fpn", [0], src_background=False)
    with pytest.raises(ValueError, match="no class head"):
        transfer_head({"backbone.body.conv1.weight": torch.zeros(1)}, "fasterrcnn_r50_fpn", [0])


def test_detector_backbone_into_pspnet():
    from zoo.convert.transfer import transfer_backbone
    from zoo.models import build

    detector = build("fasterrcnn_r50_fpn", 5)
    with torch.no_grad():
        for p in detector.backbone.body.parameters():
            p.normal_()
    seg = build("pspnet_r50", 21)
    head_before = seg.classifier[-1].weight.clone()
    copied = transfer_backbone(detector.state_dict(), seg)
    sd = seg.state_dict()
    assert copied == 53 + 53 * 4  # ResNet-50: 53 convolutions, 53 BatchNorms (weight, bias, running mean and var)
    torch.testing.assert_close(sd["backbone.layer4.2.conv3.weight"],
                               detector.state_dict()["backbone.body.layer4.2.conv3.weight"])
    torch.testing.assert_close(sd["backbone.bn1.running_var"], detector.state_dict()["backbone.body.bn1.running_var"])
    torch.testing.assert_close(seg.classifier[-1].weight, head_before)
    with pytest.raises(ValueError, match="no ResNet trunk"):
        transfer_backbone({"head.weight": torch.ones(1)}, seg)
