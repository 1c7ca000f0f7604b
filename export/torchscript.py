"""TorchScript writer: the export graph is scripted (not traced), so the batch dimension stays dynamic and the
per-image NMS loop stays a loop; the module returns a plain tuple (no torchvision ``(losses, detections)`` pair),
and the metadata travels inside the archive as ``metadata.json``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

EXTRA_FILE = "metadata.json"


def script_graph(graph: nn.Module) -> torch.jit.ScriptModule:
    """Script and freeze ``graph`` (freezing inlines the weights and folds constants, e.g. frozen BatchNorm)."""
    return torch.jit.freeze(torch.jit.script(graph.eval()))


def write_torchscript(module: torch.jit.ScriptModule, path: Path, metadata: dict[str, Any] | None = None) -> None:
    extra = {EXTRA_FILE: json.dumps(metadata or {}, sort_keys=True)}
    torch.jit.save(module, str(path), _extra_files=extra)


def read_torchscript_metadata(path: str | Path) -> dict[str, Any]:
    extra = {EXTRA_FILE: ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[EXTRA_FILE] or "{}")
