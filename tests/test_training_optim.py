"""training.optim: the schedules and optimizers of a recipe."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from training.optim import LRFactor, build_optimizer, build_scheduler, lr_factor
from training.recipes import Recipe


def _recipe(**changes) -> Recipe:
    return dataclasses.replace(Recipe(name="t", source="test"), **changes)


def test_warmup_cosine_warms_up_then_follows_a_cosine_over_the_remaining_iterations():
    f = LRFactor("warmup_cosine", max_iter=110, steps=(), gamma=0.1, warmup_iters=10, warmup_factor=0.1)
    assert f(0) == pytest.approx(0.1) and f(5) == pytest.approx(0.55)
    assert f(10) == 1.0 and f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0, abs=1e-12)
    for it in (10, 35, 85):
        assert f(it) == pytest.approx(0.5 * (1 + math.cos(math.pi * (it - 10) / 100)))
    assert LRFactor("warmup_cosine", 110, (), 0.1, 10, 0.1, min_ratio=0.2)(110) == pytest.approx(0.2)


def test_multiplied_warmup_schedules_keep_their_shape():
    step = LRFactor("multistep", max_iter=100, steps=(50, 80), gamma=0.1, warmup_iters=10, warmup_factor=0.001)
    assert step(0) == pytest.approx(0.001) and step(10) == 1.0 and step(50) == pytest.approx(0.1)
    assert step(80) == pytest.approx(0.01)
    cosine = LRFactor("cosine", max_iter=100, steps=(), gamma=0.1, warmup_iters=0, warmup_factor=1.0)
    assert cosine(50) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        LRFactor("linear", 100, (), 0.1, 0, 1.0)(1)


def test_scheduler_sets_the_recipe_lr_times_the_factor_every_iteration():
    recipe = _recipe(lr=0.02, schedule="warmup_cosine", max_iter=20, steps=(), warmup_iters=4, warmup_factor=0.1)
    model = nn.Linear(3, 2)
    opt = build_optimizer(model, recipe)
    sched = build_scheduler(opt, recipe)
    factor = lr_factor(recipe)
    for it in range(20):
        assert opt.param_groups[0]["lr"] == 0.02 * factor(it)
        opt.step()
        sched.step()


def test_adamw_decays_weights_only_and_sgd_everything_trainable():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))
    model[2].weight.requires_grad_(False)
    adamw = build_optimizer(model, _recipe(optimizer="adamw", lr=1e-3, weight_decay=1e-4))
    assert isinstance(adamw, torch.optim.AdamW)
    decay, no_decay = adamw.param_groups
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert [p.ndim for p in decay["params"]] == [4]  # the frozen 1x1 conv is left out
    assert sorted(p.ndim for p in no_decay["params"]) == [1, 1, 1, 1]  # conv biases, BatchNorm weight and bias
    sgd = build_optimizer(model, _recipe(optimizer="sgd", lr=0.02, momentum=0.9))
    assert isinstance(sgd, torch.optim.SGD) and len(sgd.param_groups) == 1
    assert len(sgd.param_groups[0]["params"]) == 5 and sgd.param_groups[0]["momentum"] == 0.9
    with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
        build_optimizer(model, _recipe(optimizer="adam"))
