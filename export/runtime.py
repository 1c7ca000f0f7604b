"""Run exported artefacts: one callable per format, ``images [B, 3, H, W] float32 -> {output name: array}``."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from zoo.vocabulary import BF16, F32, RUNTIME_PRECISIONS

Runner = Callable[[np.ndarray], dict[str, np.ndarray]]  # images [B, 3, H, W] float32 -> outputs by name


class OnnxRunner:
    """ONNX Runtime with full graph optimisation on a model file (or its serialized bytes); ``threads`` intra-op
    threads (default: all cores), ``providers`` (default: CPU only), ``outputs`` the names to fetch (default: all)."""

    def __init__(self, path: str | Path | bytes, threads: int | None = None, providers: list[str] | None = None,
                 outputs: list[str] | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        model = path if isinstance(path, bytes) else str(path)
        self.session = ort.InferenceSession(model, options, providers=providers or ["CPUExecutionProvider"])
        self.outputs = outputs or [o.name for o in self.session.get_outputs()]

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self.outputs, {"images": np.ascontiguousarray(images, dtype=np.float32)})
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


def bf16_supported() -> bool:
    """Whether OpenVINO is installed and this CPU computes in bfloat16 natively (AVX512-BF16 or AMX)."""
    try:
        import openvino as ov
    except ImportError:
        return False
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoRunner:
    """An ONNX export compiled by OpenVINO for the CPU (``pip install openvino``), read straight from the .onnx
    file. ``precision="bf16"`` runs matrix products in bfloat16 where the CPU has native support (AVX512-BF16 or
    AMX) and is refused elsewhere; its answers differ from fp32 by more than the fp32 parity tolerance
    (:data:`export.parity.BF16_TOLERANCE`)."""

    def __init__(self, path: str | Path, precision: str = F32, threads: int | None = None) -> None:
        import openvino as ov

        if precision not in RUNTIME_PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(RUNTIME_PRECISIONS)}, not {precision!r}")
        if precision == BF16 and not bf16_supported():
            raise RuntimeError("this CPU has no native bfloat16 (AVX512-BF16 or AMX): use precision f32")
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision,
                  "INFERENCE_NUM_THREADS": threads or os.cpu_count() or 1}
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.outputs = [o.get_any_name() for o in self.compiled.outputs]

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        result = self.request.infer({"images": np.ascontiguousarray(images, dtype=np.float32)})
        return {name: np.array(result[output]) for name, output in zip(self.outputs, self.compiled.outputs)}


def runner_for(fmt: str, path: Path, outputs: tuple[str, ...] | list[str], runtime: str = "onnxruntime",
               precision: str = F32, *, threads: int | None = None, providers: list[str] | None = None) -> Runner:
    """What runs an artefact: TorchScript, or an ONNX file on onnxruntime (f32; ``providers``, default CPU) or
    OpenVINO (f32 or bf16, CPU); ``outputs``: the names it answers (TorchScript) or fetches (onnxruntime)."""
    if fmt != "onnx":
        return TorchScriptRunner(path, outputs)
    if runtime == "openvino":
        return OpenVinoRunner(path, precision, threads)
    if runtime != "onnxruntime" or precision != F32:
        raise ValueError(f"runtime {runtime!r} at precision {precision!r}: onnxruntime runs f32, openvino f32 or bf16")
    return OnnxRunner(path, threads, providers, list(outputs))
