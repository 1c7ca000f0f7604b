"""HTTP detection and segmentation service for objects365-zoo models (FastAPI; torch, onnxruntime or Triton).

``python -m serving`` serves the shipped demo model; see ``serving/README.md`` for flags, environment and API.
The names below import on first use, so that ``python -m serving`` without the extra answers in one line.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .config import ServingConfig

__all__ = ["ServingConfig", "create_app"]
_HOMES = {"ServingConfig": ".config", "create_app": ".app"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(_HOMES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
