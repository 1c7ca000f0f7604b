"""Export zoo models to ONNX and TorchScript (fixed size, dynamic batch, padded outputs), check parity with the
eager model on real photos, and generate Triton model repositories.

>>> from export import export_onnx
>>> export_onnx("yolox_nano_coco", "exports/yolox")     # model.onnx + metadata.json

Names are imported on first use, so that the torch-free parts (``export.contract``, ``export.artifact``,
``export.runtime``) serve an exported model without torch installed.
"""
from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "export_onnx": "api", "export_torchscript": "api", "export_model": "api", "parity_of_export_dir": "api",
    "default_image_size": "api", "ParityError": "api", "graph_for": "graphs", "ExportUnsupportedError": "graphs",
    "check_parity": "parity", "ParityReport": "parity", "Tolerance": "parity", "read_metadata": "artifact",
    "ExportError": "artifact",
}
__all__ = ["ExportError", "ExportUnsupportedError", "ParityError", "ParityReport", "Tolerance", "check_parity",
           "default_image_size", "export_model", "export_onnx", "export_torchscript", "graph_for",
           "parity_of_export_dir", "read_metadata"]  # the keys of _HOMES


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'export' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
