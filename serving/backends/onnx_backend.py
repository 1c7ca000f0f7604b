"""In-process inference on an ONNX export folder (``model.onnx`` + ``metadata.json`` from ``export``), run by ONNX
Runtime or by OpenVINO (fp32, or bf16 on CPUs with native bfloat16)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zoo.vocabulary import F32, ModelInfo

from .base import Backend, Result
from .exported import Runner, check_onnx_file, export_dir_of, run_letterboxed, served_outputs

if TYPE_CHECKING:
    from ..config import ServingConfig

log = logging.getLogger("serving.onnx")


def providers_for(device: str) -> list[str]:
    """ONNX Runtime execution providers for a torch-style device name; CPU is always the fallback."""
    import onnxruntime as ort

    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError("device cuda requested but this onnxruntime has no CUDAExecutionProvider "
                               "(install onnxruntime-gpu)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxBackend(Backend):
    """Runs an export folder with onnxruntime (``runtime="onnxruntime"``) or OpenVINO (``"openvino"``, at
    ``precision`` f32 or bf16); photos are letterboxed into its fixed input size."""

    def __init__(self, export_dir: str | Path, *, device: str = "cpu", threads: int | None = None,
                 max_batch_size: int = 8, runtime: str = "onnxruntime", precision: str = F32) -> None:
        from export.artifact import METADATA_FILE, ExportError, input_size, pad_value, read_metadata
        from export.runtime import runner_for

        export_dir = export_dir_of(Path(export_dir))
        self.meta = read_metadata(export_dir)  # checks the artefact's path and the declared input size
        path = export_dir / self.meta["artifact"]
        if self.meta.get("artifact_format") != "onnx":
            raise ExportError(f"{export_dir / METADATA_FILE}: expected an ONNX export, found artifact_format "
                              f"{self.meta.get('artifact_format')!r}")
        if runtime == "openvino" and not device.startswith("cpu"):
            raise ValueError(f"the openvino backend runs on the CPU, not {device!r}")
        fetch = served_outputs(self.meta["task"])
        providers = providers_for(device) if runtime == "onnxruntime" else None
        try:
            self._run: Runner = runner_for("onnx", path, fetch, runtime, precision, threads=threads,
                                           providers=providers)
        except Exception:
            check_onnx_file(path)  # a file that does not parse: one line naming it, not the runtime's many
            raise
        self.info = ModelInfo.from_manifest(self.meta, runtime, precision)
        self.size = input_size(self.meta)
        self.pad = pad_value(self.meta)
        self.max_batch_size = max_batch_size

    def infer(self, images: list[np.ndarray]) -> list[Result]:
        return run_letterboxed(self._run, images, self.size, self.info.task, self.pad)

    @classmethod
    def from_config(cls, name: str, config: ServingConfig) -> OnnxBackend:
        """``config.onnx`` when given, else the model's export in ``config.onnx_cache`` (exported on first use)."""
        export_dir = config.onnx if config.onnx is not None else packaged_or_exported(name, config)
        return cls(export_dir, device=config.device, threads=config.threads, max_batch_size=config.max_batch_size,
                   runtime="openvino" if config.backend == "openvino" else "onnxruntime", precision=config.precision)


def packaged_or_exported(name: str, config: ServingConfig) -> Path:
    """The export that ships in the package for ``name`` at the server's size (no torch needed), else the cached
    export made on first use (:func:`ensure_export`, which needs the ``[export]`` extra and torch)."""
    import zoo
    from zoo.specs import packaged_export

    side = zoo.get_spec(name).preprocessing.input_size(config.image_size)
    if config.pretrained and side[0] == side[1]:
        folder = packaged_export(zoo.get_spec(name).name, side[0])
        if folder is not None:
            return folder
    try:
        import torch  # noqa: F401
    except ImportError:
        raise RuntimeError(f"no ONNX export of {name} ships in the package at {side[0]}x{side[1]}, and exporting "
                           "one needs torch: pip install -e \".[serving]\" (or pass --onnx FOLDER)") from None
    return ensure_export(name, config)


def ensure_export(name: str, config: ServingConfig) -> Path:
    """The cached ONNX export of zoo model ``name`` at the server's size and weights, exported if missing
    (written to a temporary folder and renamed, so a half-written export is never used). The export's parity
    check against the eager model runs when scikit-image (its sample photos) is installed."""
    import zoo
    from export import export_onnx
    from export.artifact import ExportError

    from . import load_zoo_model

    spec = zoo.get_spec(name)
    height, width = spec.preprocessing.input_size(config.image_size)
    weights = "pretrained" if config.pretrained else "random"
    out = Path(config.onnx_cache) / f"{spec.name}-v{spec.version}-{height}x{width}-{weights}"
    if (out / "metadata.json").is_file():
        return out
    try:
        import skimage  # noqa: F401  (the parity check's photos)

        parity = True
    except ImportError:
        parity = False
        log.warning("scikit-image is not installed: exporting without the parity check")
    log.info("exporting to ONNX on first use", extra={"model": name, "folder": str(out)})
    try:
        export_onnx(load_zoo_model(name, config), out, image_size=(height, width), parity=parity)
    except ExportError:
        if not (out / "metadata.json").is_file():  # another process may have published it meanwhile
            raise
    return out
