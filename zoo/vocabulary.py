"""The names zoo, training, export and serving share, in one torch-free module: task names, precision names, the
cache folder, and :class:`ModelInfo`, what a served or exported model is (built from a registry spec or from an
export's ``metadata.json``).

Importing this module imports nothing heavier than the standard library, so the torch-free ``serving-onnx`` install
and the Triton preprocessing step can use it.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from .registry import ModelSpec

# ---- tasks -----------------------------------------------------------------------------------------------------
Task = Literal["detection", "segmentation"]
DETECTION: Final = "detection"  # boxes, scores and labels per image
SEGMENTATION: Final = "segmentation"  # a label map per image
TASKS: Final = (DETECTION, SEGMENTATION)

# ---- precisions ------------------------------------------------------------------------------------------------
FP32: Final = "fp32"  # what a model computes in (ModelInfo.precision, an export's metadata "precision")
BF16: Final = "bf16"
INT8: Final = "int8"
MODEL_PRECISIONS: Final = (FP32, BF16, INT8)
EXPORT_PRECISIONS: Final = (FP32, INT8)  # what `python -m export --precision` writes
F32: Final = "f32"  # OpenVINO's name for float32 inference precision
RUNTIME_PRECISIONS: Final = (F32, BF16)  # what a runtime computes an fp32 export in (`--precision` of parity, serve)

# ---- the cache folder ------------------------------------------------------------------------------------------
CACHE_ENV: Final = "O365ZOO_CACHE"
DEFAULT_CACHE: Final = "~/.cache/objects365-zoo"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$O365ZOO_CACHE``, else ``~/.cache/objects365-zoo``: downloads, converted weights, the
    user registry, dataset indexes and the server's state live below it."""
    return Path(cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


# ---- what a model is -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelInfo:
    """What the API reports about a model. ``categories[l - label_offset]`` names label ``l``.

    - ``task``: :data:`DETECTION` or :data:`SEGMENTATION`; ``arch``: a ``zoo.models`` architecture.
    - ``backend``: what runs it (``"torch"``, ``"onnxruntime"``, ``"openvino"``, ``"triton"``).
    - ``score_threshold``: the model's own floor (requests cannot see detections below it); ``max_detections``.
    - ``label_offset``: the label of ``categories[0]``: 1 with a background class (every detector), else 0.
    - ``precision``: what the model computes in, one of :data:`MODEL_PRECISIONS`.
    """

    name: str
    version: str
    task: Task
    categories: tuple[str, ...]
    arch: str = ""
    backend: str = ""
    score_threshold: float = 0.05
    max_detections: int = 100
    label_offset: int = 1
    precision: str = FP32

    @classmethod
    def from_spec(cls, spec: ModelSpec, categories: Sequence[str] | None = None, backend: str = "") -> ModelInfo:
        """From a registry spec; ``categories`` (a loaded model's names, which outrank the spec's) or the spec's."""
        if categories is None:
            from .categories import get_categories

            categories = get_categories(spec.categories)
        pre = spec.preprocessing
        return cls(name=spec.name, version=str(spec.version), task=spec.task, categories=tuple(categories),
                   arch=spec.arch, backend=backend, score_threshold=pre.score_threshold,
                   max_detections=pre.max_detections, label_offset=spec.label_offset)

    @classmethod
    def from_manifest(cls, meta: Mapping[str, Any], backend: str = "", runtime_precision: str = F32) -> ModelInfo:
        """From an export's ``metadata.json``. Its precision is the export's (:data:`INT8` for a quantized one), else
        :data:`BF16` when the runtime computes in bfloat16, else :data:`FP32`."""
        pre = meta["preprocessing"]
        return cls(name=meta["model"], version=str(meta["version"]), task=meta["task"],
                   categories=tuple(meta["categories"]), arch=meta.get("arch", ""), backend=backend,
                   score_threshold=float(pre["score_threshold"]), max_detections=int(pre["max_detections"]) or 100,
                   label_offset=int(meta.get("label_offset", 1)),
                   precision=meta.get("precision") or (BF16 if runtime_precision == BF16 else FP32))
