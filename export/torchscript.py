"""TorchScript writer. Detection graphs are scripted (not traced), so the batch dimension stays dynamic and the
per-image NMS loop stays a loop; segmentation graphs (fully convolutional, no data-dependent control flow) are
traced, which keeps the batch dynamic too and accepts model code TorchScript cannot compile (e.g. ``[x, *pooled]``).
The module returns a plain tuple (no torchvision ``(losses, detections)`` pair); the metadata travels inside the
archive as ``metadata.json``. Parity runs a batch larger than the tracing example, so a baked batch size fails it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

EXTRA_FILE = "metadata.json"


def script_graph(graph: nn.Module, image_size: tuple[int, int]) -> torch.jit.ScriptModule:
    """Script (detection) or trace (segmentation) ``graph``, then freeze it (freezing inlines the weights and
    folds constants, e.g. frozen BatchNorm)."""
    from .graphs import SegmentationGraph

    graph = graph.eval()
    if isinstance(graph, SegmentationGraph):
        with torch.no_grad():
            module = torch.jit.trace(graph, torch.rand(1, 3, *image_size), check_trace=False)
    else:
        module = torch.jit.script(graph)
    return torch.jit.freeze(module)


def write_torchscript(module: torch.jit.ScriptModule, path: Path, metadata: dict[str, Any] | None = None) -> None:
    extra = {EXTRA_FILE: json.dumps(metadata or {}, sort_keys=True)}
    torch.jit.save(module, str(path), _extra_files=extra)


def read_torchscript_metadata(path: str | Path) -> dict[str, Any]:
    extra = {EXTRA_FILE: ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[EXTRA_FILE] or "{}")
