"""objects365-zoo: Objects365-pretrained detectors in one line.

>>> import zoo
>>> model = zoo.load("yolox_nano_coco")             # the embedded default: COCO-80, weights in the package
>>> model = zoo.load("fpn_r50_obj365")              # MMDetection's best Objects365 Faster R-CNN, converted
>>> model = zoo.load("fpn_r50_obj365", categories="coco")   # head transferred to COCO-80 through the mapping
"""
from typing import Any

from . import specs as _specs  # noqa: F401  (registers every named model)
from .api import NoPublishedWeightsError, describe, load, model_categories, model_spec
from .registry import Metric, ModelSpec, UnknownModelError, get_spec, list_models
from .specs import DEFAULT_MODEL

__all__ = ["DEFAULT_MODEL", "Metric", "ModelSpec", "NoPublishedWeightsError", "UnknownModelError", "describe", "detect",
           "get_spec", "list_models", "load", "model_categories", "model_spec"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # ``zoo.detect`` imports NumPy and Pillow on first use, so that ``import zoo`` stays light
    if name == "detect":
        from .inference import detect

        return detect
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
