"""The export contract that runtimes need without torch: the graphs' output names by task, Triton model names.

Exported graphs take ``images [B, 3, H, W]`` float32 RGB on [0, 1], letterboxed by :mod:`zoo.letterbox` with the
pad value of the model's preprocessing (``metadata.json`` carries it), and answer the outputs below. The serving
backends for ONNX Runtime, OpenVINO and Triton import this module, not :mod:`export.graphs`.
"""
from __future__ import annotations

import re

from zoo.vocabulary import SEGMENTATION

DETECTION_OUTPUTS: tuple[str, ...] = ("boxes", "scores", "labels", "num_detections")
SEGMENTATION_OUTPUTS: tuple[str, ...] = ("labels", "logits")


def output_names(task: str) -> tuple[str, ...]:
    """The output names of an export graph of ``task`` ("detection" or "segmentation")."""
    return SEGMENTATION_OUTPUTS if task == SEGMENTATION else DETECTION_OUTPUTS


def triton_name(name: str) -> str:
    """A model name Triton and file systems accept: lowercase letters, digits and underscores."""
    cleaned = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
    if not cleaned:
        raise ValueError(f"cannot make a Triton model name from {name!r}")
    return cleaned
