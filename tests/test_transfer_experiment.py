"""The transfer experiment (training/transfer_experiment.py) in miniature: the three initialisations differ exactly as
claimed, the source class is the one the head predicts at the crowns, and a tiny three-way run yields one row per way
and checkpoint."""
from __future__ import annotations

import pytest
import torch

import zoo
from training.demo import Tile
from training.transfer_experiment import WAYS, Schedule, build, pick_source_class, plot_curves, predict_native, run
from zoo.models.yolox import PRIOR_BIAS

torch.set_num_threads(2)
SOURCE = 14  # any COCO class; "bird"
CLS = "head.cls_preds"


def _tile(name: str, seed: int, height: int = 100, width: int = 90) -> Tile:
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g)
    boxes = torch.tensor([[5.0, 8.0, 40.0, 45.0], [50.0, 20.0, 85.0, 60.0], [10.0, 60.0, 45.0, 95.0]])
    return Tile(name, image, boxes)


@pytest.fixture(scope="module")
def coco():
    return zoo.load("yolox_nano_coco", progress=False)


@pytest.fixture(scope="module")
def state(coco) -> dict[str, torch.Tensor]:
    return coco.state_dict()


@pytest.fixture(scope="module")
def models(state):
    rng = torch.random.get_rng_state()
    built = {way: build(way, state, SOURCE, seed=3) for way in WAYS}
    assert torch.equal(torch.random.get_rng_state(), rng)  # fresh tensors come from the seed, not the global RNG
    return built


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a, b)


def test_backbone_and_head_keeps_every_tensor_and_copies_the_source_row(models, state):
    sd = models["backbone+head"].state_dict()
    assert set(sd) == set(state)
    for key, value in sd.items():
        if key.startswith(CLS):
            assert value.shape[0] == 1
            assert torch.equal(value[0], state[key][SOURCE])
        else:
            assert _same(value, state[key]), key


def test_backbone_only_keeps_the_backbone_and_redraws_the_whole_head(models, state):
    sd = models["backbone"].state_dict()
    backbone = [k for k in sd if k.startswith("backbone.")]
    assert backbone and all(_same(sd[k], state[k]) for k in backbone)
    head_weights = [k for k in sd if k.startswith("head.") and k.endswith("conv.weight")]
    assert head_weights and not any(_same(sd[k], state[k]) for k in head_weights)
    for level in range(3):
        assert torch.allclose(sd[f"{CLS}.{level}.bias"], torch.full((1,), PRIOR_BIAS))
    # the fresh head is the scratch model's head (one draw from the seed): only the starting point differs
    scratch = models["scratch"].state_dict()
    assert all(torch.equal(sd[k], scratch[k]) for k in sd if k.startswith("head."))


def test_scratch_is_pretrained_nowhere_and_trains_its_batchnorm(models, state):
    sd = models["scratch"].state_dict()
    convs = [k for k in sd if k.endswith("conv.weight")]
    assert convs and not any(_same(sd[k], state[k]) for k in convs)
    assert not models["scratch"].frozen_bn and models["backbone"].frozen_bn and models["backbone+head"].frozen_bn


def test_unknown_way_is_refused(state):
    with pytest.raises(ValueError, match="way must be one of"):
        build("head only", state, SOURCE)


def test_source_class_is_the_one_the_head_predicts_at_the_crowns():
    model = zoo.load("yolox_nano_coco", progress=False)  # a copy whose class biases we may change
    with torch.no_grad():
        for level in range(3):
            model.head.cls_preds[level].bias[57] = 20.0  # class 57 ("couch") certain everywhere
    tiles = [_tile("a", 0), _tile("b", 1)]
    index, ranking = pick_source_class(model, tiles, model.categories)
    assert index == 57 and next(iter(ranking)) == model.categories[57]
    assert len(ranking) == 80 and ranking[model.categories[57]] > 0.99
    values = list(ranking.values())
    assert values == sorted(values, reverse=True)
    assert model.transform.size == (416, 416)  # restored


def test_native_prediction_keeps_scale_one_and_restores_the_model(models):
    model = models["backbone+head"]
    model.eval()
    image = _tile("c", 2).image.float().div(255)
    out = predict_native(model, image)
    assert model.transform.size == (416, 416) and model.score_thresh == 0.05 and model.detections_per_img == 100
    assert not model.training
    boxes = out["boxes"]
    assert (boxes[:, 0::2] <= 90).all() and (boxes[:, 1::2] <= 100).all() and (boxes >= 0).all()


def test_tiny_three_way_run_has_a_row_per_way_and_checkpoint(tmp_path, coco, state):
    train, heldout = [_tile("t0", 3), _tile("t1", 4, 128, 128)], _tile("held", 5)
    schedule = Schedule(checkpoints=(0, 1, 2), batch=1, window=64, warmup=1, seed=0)
    result, models = run(train, heldout, schedule, progress=False)
    assert [(r["way"], r["iteration"]) for r in result["rows"]] == [(w, i) for w in WAYS for i in (0, 1, 2)]
    for row in result["rows"]:
        assert 0.0 <= row["AP"] <= row["AP50"] <= 1.0 and row["detections"] >= 0
    assert tuple(result["schedule"]["checkpoints"]) == (0, 1, 2)
    source = coco.categories.index(result["source_class"])
    # two iterations moved every way away from its starting point
    for way, model in models.items():
        start = build(way, state, source, seed=0).state_dict()
        assert any(not torch.equal(v, start[k]) for k, v in model.state_dict().items() if v.is_floating_point()), way
    png = plot_curves(result["rows"], tmp_path / "curves.png", ("reference", 0.28))
    assert png.stat().st_size > 5000


def test_parallel_ways_train_as_in_one_process():
    train, heldout = [_tile("t0", 3)], _tile("held", 5)
    schedule = Schedule(checkpoints=(0, 2), batch=1, window=64, warmup=1, seed=1)
    ways = ("backbone", "scratch")
    one, one_models = run(train, heldout, schedule, ways=ways, progress=False)
    two, two_models = run(train, heldout, schedule, ways=ways, jobs=2, progress=False)
    assert [(r["way"], r["iteration"]) for r in two["rows"]] == [(r["way"], r["iteration"]) for r in one["rows"]]
    for way in ways:  # the workers run at one thread: equal up to float summation order
        a, b = one_models[way].state_dict(), two_models[way].state_dict()
        assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-4) for k in a), way
