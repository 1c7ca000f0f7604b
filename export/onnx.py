"""ONNX writer: TorchScript-based ``torch.onnx.export`` (``dynamo=False``) of an export graph, dynamic batch.

Why not ``dynamo=True`` (checked with torch 2.15 + onnxscript): ``torch.export`` fails on torchvision's RetinaNet
at the data-dependent guard in ``batched_nms`` (``boxes.numel() > 4000`` on an unbacked size) and on our graph at
the empty-candidates test of the NMS loop; our NMS is a custom autograd function whose ONNX form is the standard
``NonMaxSuppression``, which the TorchScript-based exporter maps through ``symbolic`` while keeping the batch
dimension symbolic. Opset 17 is the lowest with everything we need (RoiAlign-16 ``aligned``).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

OPSET = 17


@runtime_checkable
class OnnxNmsSwitch(Protocol):
    """A graph whose NMS can export as ONNX ``NonMaxSuppression``
    (:meth:`export.graphs.DetectionGraph.use_onnx_nms`)."""

    def use_onnx_nms(self) -> object: ...


def write_onnx(graph: nn.Module, path: Path, image_size: tuple[int, int], outputs: tuple[str, ...],
               opset: int = OPSET) -> None:
    """Export ``graph`` (from :func:`export.graphs.graph_for`) to ``path``; validated with the ONNX checker."""
    import onnx

    if isinstance(graph, OnnxNmsSwitch):
        graph.use_onnx_nms()
    example = torch.rand(1, 3, *image_size)
    axes = {name: {0: "batch"} for name in ("images", *outputs)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints that are constants of a fixed-size graph
        torch.onnx.export(graph, (example,), str(path), dynamo=False, opset_version=opset, input_names=["images"],
                          output_names=list(outputs), dynamic_axes=axes, do_constant_folding=True)
    onnx.checker.check_model(str(path))


def set_onnx_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """Store ``metadata`` in the model's ``metadata_props`` (strings; other values as JSON)."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    onnx.save(model, str(path))


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}
