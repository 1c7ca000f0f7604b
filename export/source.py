"""What gets exported: a zoo model (by registry name or one of our safetensors checkpoints) and the facts that
travel with it (name, task, categories, version, preprocessing, source digest)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from torchvision.models.detection import FasterRCNN, RetinaNet

from zoo.hub import sha256_file
from zoo.preprocess import Preprocessing


@dataclass
class ExportSource:
    model: nn.Module  # eval mode, CPU
    name: str
    task: str  # "detection" | "segmentation"
    arch: str
    categories_key: str | None
    categories: tuple[str, ...]
    version: str
    preprocessing: Preprocessing
    checkpoint: str | None  # where the weights came from; None for random weights
    sha256: str | None  # the checkpoint's digest (full, or the registry's published prefix)
    weights: str  # "pretrained" | "random" | "in-memory"
    label_offset: int  # label of categories[0]: 1 where label 0 is background


def load_source(model_or_name: str | Path | nn.Module, *, pretrained: bool = True,
                score_threshold: float | None = None) -> ExportSource:
    """Resolve a registry name, a ``.safetensors`` checkpoint path, or a model returned by ``zoo.load``.

    ``pretrained=False`` builds the architecture with random weights (for tests and benchmarks).
    ``score_threshold`` overrides the detector's threshold (e.g. lower for random weights); the metadata records it.
    """
    import zoo

    if isinstance(model_or_name, nn.Module):
        model = model_or_name
        spec = getattr(model, "spec", None)
        categories = getattr(model, "categories", None)
        if not isinstance(spec, zoo.ModelSpec) or categories is None:
            raise ValueError("an in-memory model must come from zoo.load (it needs .spec and .categories)")
        checkpoint, sha256, weights = spec.source, spec.sha256, "in-memory"
    else:
        text = str(model_or_name)
        is_path = text.endswith(".safetensors") or Path(text).exists()
        if is_path and not Path(text).is_file():
            raise FileNotFoundError(f"checkpoint not found: {text}")
        if not is_path:
            zoo.get_spec(text)  # unknown names fail here with the registry's suggestions
        model = zoo.load(text, pretrained=pretrained or is_path, progress=False)
        spec, categories = zoo.model_spec(model), zoo.model_categories(model)
        if is_path:
            checkpoint, sha256, weights = str(Path(text).resolve()), sha256_file(Path(text)), "pretrained"
        elif pretrained:
            # weights that ship in the package are named by their registry entry, not by this machine's path
            local = spec.source is not None and "://" not in spec.source
            checkpoint, sha256, weights = spec.name if local else spec.source, spec.sha256, "pretrained"
        else:
            checkpoint, sha256, weights = None, None, "random"
    model = model.eval().cpu()
    pre = spec.preprocessing
    if score_threshold is not None:
        pre = dataclasses.replace(pre, score_threshold=float(score_threshold))
        _set_score_threshold(model, pre.score_threshold)
    return ExportSource(
        model=model, name=spec.name, task=spec.task, arch=spec.arch, categories_key=spec.categories,
        categories=tuple(categories), version=str(spec.version), preprocessing=pre,
        label_offset=spec.label_offset,
        checkpoint=checkpoint, sha256=sha256, weights=weights,
    )


def _set_score_threshold(model: nn.Module, value: float) -> None:
    from zoo.models.hf_detr import HfDetector
    from zoo.models.yolox import YOLOX

    if isinstance(model, FasterRCNN):
        model.roi_heads.score_thresh = value
    elif isinstance(model, (RetinaNet, YOLOX, HfDetector)):
        model.score_thresh = value
    else:
        raise ValueError(f"score_threshold applies to detectors, not to {type(model).__name__}")
