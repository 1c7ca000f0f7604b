"""Optimizers and learning-rate schedules of a :class:`~training.recipes.Recipe`.

- ``optimizer="sgd"``: SGD with momentum and weight decay on every trainable parameter (the detection recipes).
- ``optimizer="adamw"``: AdamW with weight decay on weights only; biases and normalisation parameters (one dimension
  or less) are not decayed (the demo model's recipe).
- Schedules (:class:`LRFactor`): ``multistep``, ``poly`` and ``cosine`` are multiplied by a linear warmup from
  ``warmup_factor``; ``warmup_cosine`` warms up linearly from ``warmup_factor`` to 1 and then follows a cosine over
  the iterations after the warmup.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import torch
from torch import nn

from .recipes import Recipe

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("multistep", "poly", "cosine", "warmup_cosine")


@dataclass(frozen=True)
class LRFactor:
    """lr multiplier at an iteration (see the module docstring). A plain dataclass so the scheduler's state dict
    stores it as data."""

    schedule: str
    max_iter: int
    steps: tuple[int, ...]
    gamma: float
    warmup_iters: int
    warmup_factor: float
    power: float = 0.9
    min_ratio: float = 0.0

    def __call__(self, it: int) -> float:
        if self.schedule == "warmup_cosine":
            return self._warmup_cosine(it)
        if self.schedule == "poly":
            t = min(it, self.max_iter) / self.max_iter
            factor = (1.0 - t) ** self.power * (1.0 - self.min_ratio) + self.min_ratio
        elif self.schedule == "cosine":
            t = min(it, self.max_iter) / self.max_iter
            factor = 0.5 * (1.0 + math.cos(math.pi * t)) * (1.0 - self.min_ratio) + self.min_ratio
        elif self.schedule == "multistep":
            factor = self.gamma ** bisect.bisect_right(self.steps, it)
        else:
            raise ValueError(f"unknown schedule {self.schedule!r}: one of {', '.join(SCHEDULES)}")
        if it < self.warmup_iters:
            alpha = it / self.warmup_iters
            factor *= self.warmup_factor * (1.0 - alpha) + alpha
        return factor

    def _warmup_cosine(self, it: int) -> float:
        if it < self.warmup_iters:
            return self.warmup_factor + (1.0 - self.warmup_factor) * it / self.warmup_iters
        decayed = min(it, self.max_iter) - self.warmup_iters
        cosine = 0.5 * (1 + math.cos(math.pi * decayed / max(1, self.max_iter - self.warmup_iters)))
        return cosine * (1.0 - self.min_ratio) + self.min_ratio


def lr_factor(recipe: Recipe) -> LRFactor:
    """The recipe's schedule as an lr multiplier."""
    return LRFactor(recipe.schedule, recipe.max_iter, tuple(recipe.steps), recipe.gamma, recipe.warmup_iters,
                    recipe.warmup_factor, recipe.poly_power, recipe.min_lr / recipe.lr if recipe.lr else 0.0)


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over the trainable parameters of ``model`` (see the module docstring)."""
    if recipe.optimizer == "sgd":
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for p in model.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        return torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}: one of {', '.join(OPTIMIZERS)}")


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration scheduler of the recipe's :class:`LRFactor`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(recipe))
