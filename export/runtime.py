"""Run exported artefacts: one callable per format, ``images [B, 3, H, W] float32 -> {output name: array}``."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class OnnxRunner:
    """ONNX Runtime on CPU with full graph optimisation; ``threads`` intra-op threads (default: all cores)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(None, {"images": np.ascontiguousarray(images, dtype=np.float32)})
        return dict(zip(self.outputs, values))


class TorchScriptRunner:
    """A saved TorchScript export; ``outputs`` names its tuple's elements (from the metadata)."""

    def __init__(self, path: str | Path, outputs: tuple[str, ...] | list[str]) -> None:
        import torch

        self.module = torch.jit.load(str(path), map_location="cpu").eval()
        self.outputs = list(outputs)

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            values = self.module(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)))
        return {name: v.numpy() for name, v in zip(self.outputs, values)}
