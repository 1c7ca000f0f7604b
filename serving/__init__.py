"""HTTP detection and segmentation service for objects365-zoo models (FastAPI; torch, onnxruntime or Triton).

``python -m serving`` serves the shipped demo model; see ``serving/README.md`` for flags, environment and API.
"""
from .app import create_app
from .config import ServingConfig

__all__ = ["ServingConfig", "create_app"]
