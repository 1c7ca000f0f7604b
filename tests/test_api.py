"""`zoo.load` end to end: registry name -> hub (a real HTTP server on 127.0.0.1 through the mirror setting) ->
MMDetection checkpoint -> conversion -> model, and head transfer through the category mapping."""
from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import replace

import pytest
import test_convert as mm  # MMDetection-layout state dicts derived from MMDetection's model code
import torch
from hub_server import PayloadServer

import zoo
from zoo import registry
from zoo.categories import get_categories
from zoo.checkpoint import UnsafeCheckpointError, save_weights

CLS = "roi_heads.box_predictor.cls_score"
REG = "roi_heads.box_predictor.bbox_pred"


def _pth(state_dict: dict, classes: tuple[str, ...] | None) -> bytes:
    buf = io.BytesIO()
    meta = {"CLASSES": list(classes)} if classes is not None else {}
    torch.save({"meta": meta, "state_dict": state_dict}, buf)
    return buf.getvalue()


def _path(spec) -> str:
    return "/" + spec.source.split("://", 1)[1].split("/", 1)[1]


@pytest.fixture(scope="module")
def hub():
    """MMDetection-layout checkpoints for a v1 and a v2 Faster R-CNN, served like download.openmmlab.com."""
    torch.set_num_threads(2)
    server = PayloadServer().start()
    states = {}
    for name, key, seed in (("fpn_r50_obj365", "objects365_v1", 1), ("fpn_r50_obj365v2_1x", "objects365_v2", 2)):
        classes = get_categories(key)
        states[name] = mm.random_state(mm.mmdet_faster_rcnn_shapes(len(classes)), seed=seed)
        server.files[_path(zoo.get_spec(name))] = _pth(states[name], classes)
    yield server, states
    server.stop()


@pytest.fixture
def served_spec(hub, monkeypatch):
    """Point a registry name at the test server's bytes: the real files' sha256 cannot match ours, the rest is
    the registry's own entry (source URL, converter, categories) reached through the mirror setting."""
    server, _ = hub

    def use(name: str, body: bytes | None = None) -> None:
        spec = zoo.get_spec(name)
        if body is not None:
            server.files[_path(spec)] = body
        digest = hashlib.sha256(server.files[_path(spec)]).hexdigest()
        monkeypatch.setitem(registry._SPECS, name, replace(spec, sha256=digest[:8]))
        monkeypatch.setenv("O365ZOO_MIRROR", server.origin)

    return use


def test_load_downloads_converts_then_works_from_cache_offline(hub, served_spec, tmp_path):
    server, states = hub
    served_spec("fpn_r50_obj365")
    model = zoo.load("fpn_r50_obj365", cache_dir=tmp_path, progress=False)
    assert model.categories == get_categories("objects365_v1") and not model.training
    assert len(server.get_requests(_path(zoo.get_spec("fpn_r50_obj365")))) == 1
    mm_cls = states["fpn_r50_obj365"]["roi_head.bbox_head.fc_cls.weight"]
    sd = model.state_dict()
    torch.testing.assert_close(sd[f"{CLS}.weight"][0], mm_cls[-1])  # MMDetection's background (last) -> row 0
    torch.testing.assert_close(sd[f"{CLS}.weight"][1:], mm_cls[:-1])
    server.stop()
    try:
        again = zoo.load("fpn_r50_obj365", cache_dir=tmp_path, progress=False)  # no server: cache + converted cache
    finally:
        server.start()
    for key, value in again.state_dict().items():
        assert torch.equal(value, sd[key]), key


@pytest.mark.parametrize("name,key", [("fpn_r50_obj365", "objects365_v1"), ("fpn_r50_obj365v2_1x", "objects365_v2")])
def test_head_transfer_to_coco_copies_the_person_rows(hub, served_spec, tmp_path, name, key):
    _, states = hub
    served_spec(name)
    model = zoo.load(name, categories="coco", cache_dir=tmp_path, progress=False)
    assert model.categories == get_categories("coco")
    src = get_categories(key).index("person" if key.endswith("v1") else "Person")
    fc_cls = states[name]["roi_head.bbox_head.fc_cls.weight"]
    fc_reg = states[name]["roi_head.bbox_head.fc_reg.weight"]
    sd = model.state_dict()
    assert sd[f"{CLS}.weight"].shape[0] == 81 and sd[f"{REG}.weight"].shape[0] == 4 * 81
    person = 1 + get_categories("coco").index("person")
    torch.testing.assert_close(sd[f"{CLS}.weight"][person], fc_cls[src])
    torch.testing.assert_close(sd[f"{REG}.weight"][4 * person:4 * person + 4], fc_reg[4 * src:4 * src + 4])
    torch.testing.assert_close(sd[f"{CLS}.weight"][0], fc_cls[-1])  # background kept
    # backbone untouched
    torch.testing.assert_close(sd["backbone.body.conv1.weight"], states[name]["backbone.conv1.weight"])


def test_reinit_head_keeps_backbone_only(hub, served_spec, tmp_path):
    _, states = hub
    served_spec("fpn_r50_obj365")
    model = zoo.load("fpn_r50_obj365", categories="coco", head="reinit", cache_dir=tmp_path, progress=False)
    sd = model.state_dict()
    src = get_categories("objects365_v1").index("person")
    assert not torch.allclose(sd[f"{CLS}.weight"][1], states["fpn_r50_obj365"]["roi_head.bbox_head.fc_cls.weight"][src])
    torch.testing.assert_close(sd["backbone.body.conv1.weight"], states["fpn_r50_obj365"]["backbone.conv1.weight"])


def test_checkpoint_with_other_classes_is_a_clear_error(served_spec, tmp_path):
    coco_ckpt = mm.random_state(mm.mmdet_faster_rcnn_shapes(80), seed=3)
    served_spec("fpn_r50_obj365v1_1x", _pth(coco_ckpt, None))
    with pytest.raises(ValueError, match="checkpoint has 80 classes") as err:
        zoo.load("fpn_r50_obj365v1_1x", cache_dir=tmp_path, progress=False)
    assert "size mismatch" not in str(err.value)


def test_checkpoint_meta_names_the_list_it_was_trained_with(hub, served_spec, tmp_path):
    _, states = hub
    served_spec("fpn_r50_obj365v1_1x", _pth(states["fpn_r50_obj365v2_1x"], get_categories("objects365_v2")))
    with pytest.warns(UserWarning, match="'objects365_v2'"):
        model = zoo.load("fpn_r50_obj365v1_1x", cache_dir=tmp_path, progress=False)
    assert model.categories == get_categories("objects365_v2")


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_with_arbitrary_objects_is_refused(served_spec, tmp_path):
    buf = io.BytesIO()
    torch.save({"meta": {"hook": Evil()}, "state_dict": {}}, buf)
    served_spec("retinanet_r50_obj365", buf.getvalue())
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        zoo.load("retinanet_r50_obj365", cache_dir=tmp_path, progress=False)


def test_load_our_safetensors_by_path(tmp_path):
    from dataclasses import asdict

    spec = zoo.get_spec("fpn_r50_obj365_voc")
    model = zoo.load(spec.name, pretrained=False)
    path = save_weights(model.state_dict(), tmp_path / "voc.safetensors",
                        {"arch": spec.arch, "model": spec.name, "categories": list(model.categories),
                         "spec": json.dumps(asdict(spec))})
    again = zoo.load(str(path))
    assert again.categories == get_categories("voc")
    for key, value in again.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_num_classes_gives_a_fresh_head():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = zoo.load("retinanet_r50_obj365_coco", pretrained=False, num_classes=4)
    assert len(model.categories) == 3
    assert model.state_dict()["head.classification_head.cls_logits.weight"].shape[0] == 9 * 4


def test_load_shipped_weights_by_path():
    spec = zoo.get_spec("retinanet_lite0_neon_trees")
    by_path = zoo.load(spec.source)
    by_name = zoo.load(spec.name)
    assert by_path.categories == by_name.categories == ("tree",)
    assert by_path.spec.arch == spec.arch and by_path.spec.source == spec.source
    for key, value in by_name.state_dict().items():
        assert torch.equal(value, by_path.state_dict()[key]), key


def test_foreign_safetensors_by_path_is_a_clear_error(tmp_path):
    path = save_weights({"w": torch.ones(1)}, tmp_path / "other.safetensors", {"note": "not ours"})
    with pytest.raises(ValueError, match="zoo convert"):
        zoo.load(str(path))
