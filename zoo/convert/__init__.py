"""Converters from foreign checkpoint layouts to ours, by name, and ``convert_file`` behind ``zoo convert``.

A converter maps a foreign state dict to one that our builder loads with ``strict=True``. Registry entries name theirs
in ``ModelSpec.converter``.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path

from torch import Tensor

from ..registry import ModelSpec
from ..vocabulary import DETECTION
from .mmdet import (
    convert_mmdet_faster_rcnn,
    convert_mmdet_retinanet,
    load_mmdet_checkpoint,
    mmdet_classes,
)
from .transfer import check_num_classes, class_count, transfer_head

Converter = Callable[[Mapping[str, Tensor]], dict[str, Tensor]]

CONVERTERS: dict[str, Converter] = {
    "mmdet_faster_rcnn": convert_mmdet_faster_rcnn,
    "mmdet_retinanet": convert_mmdet_retinanet,
}

# The foreign files we read are MMDetection's: {"meta", "state_dict"} or a bare state dict.
read_foreign_checkpoint = load_mmdet_checkpoint

__all__ = [
    "CONVERTERS", "check_num_classes", "class_count", "convert_file", "convert_mmdet_faster_rcnn",
    "convert_mmdet_retinanet", "get_converter", "load_mmdet_checkpoint", "mmdet_classes", "read_foreign_checkpoint",
    "transfer_head",
]


def get_converter(name: str) -> Converter:
    try:
        return CONVERTERS[name]
    except KeyError:
        raise ValueError(f"unknown converter {name!r}; known: {', '.join(sorted(CONVERTERS))}") from None


def convert_file(
    src: str | Path,
    dst: str | Path,
    converter: str | Converter | ModelSpec,
    *,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Convert the foreign checkpoint ``src`` and write it to ``dst`` as safetensors (temp file, then rename).

    ``converter``: a name in :data:`CONVERTERS`, a function, or a registry :class:`ModelSpec`. A spec supplies the
    converter and our metadata (``arch``, ``model``, ``categories`` as a JSON list, ``spec`` as JSON), and the
    checkpoint's own class list (MMDetection ``meta``) must match the spec's categories. Whenever the metadata names
    ``arch`` and ``categories``, the class count is checked before anything is written.
    """
    from ..categories import check_categories, get_categories
    from ..checkpoint import save_weights

    meta_out: dict[str, str] = {}
    background = True
    if isinstance(converter, ModelSpec):
        spec = converter
        if spec.converter is None:
            raise ValueError(f"{spec.name} is published in our own layout; there is nothing to convert")
        convert = get_converter(spec.converter)
        meta_out = {
            "arch": spec.arch,
            "model": spec.name,
            "categories": json.dumps(list(get_categories(spec.categories))),
            "spec": json.dumps(asdict(spec)),
        }
        background = spec.background or spec.task == DETECTION
    else:
        spec = None
        convert = get_converter(converter) if isinstance(converter, str) else converter
    meta_out.update(metadata or {})

    state_dict, foreign_meta = load_mmdet_checkpoint(src)
    if spec is not None:
        names = mmdet_classes(foreign_meta)
        if names:
            check_categories(names, spec.categories)
    converted = convert(state_dict)
    if "arch" in meta_out and "categories" in meta_out:
        num_names = len(json.loads(meta_out["categories"]))
        check_num_classes(
            converted, meta_out["arch"], num_names + (1 if background else 0),
            categories=spec.categories if spec is not None else None, background=background,
        )
    return save_weights(converted, dst, meta_out)
