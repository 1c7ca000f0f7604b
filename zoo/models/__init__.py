"""Model builders: one module per architecture, each registering its builder under an architecture name.

Conventions shared by every detector (so training, export and serving need no per-model cases):
- input: a list of RGB float tensors ``[3, H, W]`` on [0, 1]; the model normalises and resizes itself with the
  values of a :class:`zoo.preprocess.Preprocessing`;
- ``num_classes`` counts the background: ``C + 1``; output label ``l`` (1..C) names ``categories[l - 1]``; row 0 is
  background (RetinaNet keeps an unused, strongly negative row 0, as torchvision's own COCO RetinaNet does);
- output in eval mode: ``list[dict(boxes=[N, 4] xyxy in input pixels, scores=[N], labels=[N])]``.
Segmentation models return ``{"out": logits [B, K, H, W]}`` at input resolution, like torchvision's.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


_Builder = TypeVar("_Builder", bound=Callable[..., nn.Module])


def register_builder(arch: str) -> Callable[[_Builder], _Builder]:
    """Decorator: make ``fn`` the builder of ``arch`` (its own type is kept)."""

    def wrap(fn: _Builder) -> _Builder:
        if arch in _BUILDERS:
            raise ValueError(f"architecture {arch!r} registered twice")
        _BUILDERS[arch] = fn
        return fn

    return wrap


def list_architectures() -> list[str]:
    _import_builders()
    return sorted(_BUILDERS)


def build(arch: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build ``arch`` with ``num_classes`` outputs (background included for detectors), weights uninitialised
    beyond the architecture's own initialisation; ``kwargs`` go to the builder (e.g. ``compat``, ``preprocessing``)."""
    _import_builders()
    try:
        builder = _BUILDERS[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(_BUILDERS))}") from None
    return builder(num_classes=num_classes, **kwargs)


def _import_builders() -> None:
    # Imported lazily so that `import zoo` stays cheap; each module registers itself on import.
    from . import faster_rcnn, hf_detr, light, pspnet, retinanet, yolox  # noqa: F401
