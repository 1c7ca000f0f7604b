"""Learning-rate rules.

- The paper's finetuning rule (Shao et al. 2019, §4.3.1, Table 5): an Objects365-pretrained backbone has much larger
  weights than an ImageNet one, so the finetuning learning rate is the ImageNet recipe's scaled by the ratio of their
  L2 norms: ``lr = base_lr * ||W_pretrained||_2 / ||W_imagenet||_2``. The paper reports a ratio of about 0.15, which
  turns COCO's 0.02 into 0.003. We compute the ratio from the actual weights and log it.
- Linear scaling (Goyal et al. 2017, "Accurate, Large Minibatch SGD": lr proportional to the global batch) is
  :meth:`training.recipes.Recipe.for_batch`.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch

log = logging.getLogger(__name__)

_PREFIXES = ("module.", "backbone.body.", "backbone.")
_SKIP_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def _backbone_params(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Backbone weights keyed by their ImageNet-classifier names (``layer1.0.conv1.weight``...)."""
    out = {}
    for key, value in state_dict.items():
        name = key
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
        if key.startswith("backbone.") and not key.startswith("backbone.body."):
            continue  # FPN and other neck weights are not part of the ImageNet backbone
        if name.startswith("fc.") or name.endswith(_SKIP_SUFFIXES) or not torch.is_floating_point(value):
            continue
        out[name] = value
    return out


def l2_norm_ratio(pretrained: Mapping[str, torch.Tensor], imagenet: Mapping[str, torch.Tensor]) -> float:
    """``||pretrained backbone||_2 / ||ImageNet backbone||_2`` over the weights both hold with the same shape."""
    a, b = _backbone_params(pretrained), _backbone_params(imagenet)
    common = [k for k in a if k in b and a[k].shape == b[k].shape]
    if not common:
        raise ValueError("the pretrained and ImageNet state dicts share no backbone weights: is the ImageNet file "
                         "a classifier of the same backbone (e.g. torchvision resnet50)?")
    num = math.sqrt(sum(float(a[k].double().pow(2).sum()) for k in common))
    den = math.sqrt(sum(float(b[k].double().pow(2).sum()) for k in common))
    if den == 0.0:
        raise ValueError("the ImageNet backbone weights are all zero")
    return num / den


def l2_scaled_lr(base_lr: float, pretrained: Mapping[str, torch.Tensor], imagenet: Mapping[str, torch.Tensor]
                 ) -> float:
    """The paper's rule: ``base_lr`` times the L2-norm ratio; the ratio is logged."""
    ratio = l2_norm_ratio(pretrained, imagenet)
    lr = base_lr * ratio
    log.info("L2-norm lr rule: ||pretrained|| / ||ImageNet|| = %.4f (paper: ~0.15); lr %.5g -> %.5g",
             ratio, base_lr, lr)
    return lr

