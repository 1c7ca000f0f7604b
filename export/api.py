"""``export_onnx`` / ``export_torchscript``: model -> fixed-size graph -> artefact + metadata, checked for parity,
published atomically."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, overload

from PIL import Image
from torch import nn

from zoo.preprocess import Preprocessing
from zoo.vocabulary import BF16, DETECTION, F32

from .artifact import METADATA_FILE, ExportError, build_metadata, read_metadata, staged_dir, write_json
from .contract import output_names
from .graphs import graph_for
from .parity import BF16_TOLERANCE, ParityReport, Tolerance, check_parity
from .runtime import runner_for
from .source import ExportSource, load_source

FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}


class ParityError(ExportError):
    """The export disagrees with the eager model beyond the tolerance; nothing was written."""

    def __init__(self, report: ParityReport) -> None:
        super().__init__("export failed the parity check:\n" + report.table())
        self.report = report


def default_image_size(pre: Preprocessing) -> tuple[int, int]:
    """The export's input size: :meth:`Preprocessing.input_size`, the size serving letterboxes photos into."""
    return pre.input_size()


def fit_input_size(model: nn.Module, size: tuple[int, int]) -> None:
    """Make a letterboxing model (YOLOX) letterbox into the export's size, so that the eager model the parity check
    runs and the graph see the same canvas; other models resize inside their own transform and are left alone."""
    from zoo.models.yolox import YOLOX

    if isinstance(model, YOLOX):
        model.set_input_size(*size)


def tolerance_for(precision: str) -> Tolerance:
    """The parity bar of a runtime precision: fp32 exactness, or the looser stated bar of bfloat16."""
    return BF16_TOLERANCE if precision == BF16 else Tolerance()


# The artefact path is None only when raise_on_failure=False and the parity check failed.
@overload
def export_model(model_or_name: str | Path | nn.Module | ExportSource, out_dir: str | Path, *, fmt: str = ...,
                 image_size: tuple[int, int] | None = ..., pretrained: bool = ..., score_threshold: float | None = ...,
                 parity: bool = ..., photos: dict[str, Image.Image] | None = ..., tolerance: Tolerance = ...,
                 overwrite: bool = ..., raise_on_failure: Literal[True] = ...) -> tuple[Path, ParityReport | None]: ...
@overload
def export_model(model_or_name: str | Path | nn.Module | ExportSource, out_dir: str | Path, *, fmt: str = ...,
                 image_size: tuple[int, int] | None = ..., pretrained: bool = ..., score_threshold: float | None = ...,
                 parity: bool = ..., photos: dict[str, Image.Image] | None = ..., tolerance: Tolerance = ...,
                 overwrite: bool = ..., raise_on_failure: bool) -> tuple[Path | None, ParityReport | None]: ...
def export_model(model_or_name: str | Path | nn.Module | ExportSource, out_dir: str | Path, *, fmt: str = "onnx",
                 image_size: tuple[int, int] | None = None, pretrained: bool = True,
                 score_threshold: float | None = None, parity: bool = True,
                 photos: dict[str, Image.Image] | None = None, tolerance: Tolerance = Tolerance(),
                 overwrite: bool = False, raise_on_failure: bool = True) -> tuple[Path | None, ParityReport | None]:
    """Export and (by default) check parity; ``model_or_name`` may also be a loaded :class:`ExportSource`.
    Returns ``(artefact path, report)``. A failed check raises
    :class:`ParityError` (or, with ``raise_on_failure=False``, returns ``(None, report)``); ``out_dir`` is then
    left as it was."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    if isinstance(model_or_name, ExportSource):
        source = model_or_name
    else:
        source = load_source(model_or_name, pretrained=pretrained, score_threshold=score_threshold)
    size = ((int(image_size[0]), int(image_size[1])) if image_size is not None
            else default_image_size(source.preprocessing))
    fit_input_size(source.model, size)
    graph = graph_for(source.model, size, source.task)
    outputs = output_names(source.task)
    report = None
    try:
        with staged_dir(out_dir, overwrite=overwrite) as tmp:
            artifact = tmp / FORMATS[fmt]
            extra: dict = {}
            if fmt == "onnx":
                from .onnx import OPSET, write_onnx

                write_onnx(graph, artifact, size, outputs)
                extra["opset"] = OPSET
            else:
                from .torchscript import script_graph, write_torchscript

                module = script_graph(graph, size)
                write_torchscript(module, artifact)
            if parity:
                report = check_parity(source, runner_for(fmt, artifact, outputs), size, photos, tolerance)
                extra["parity"] = report.to_dict()
                if not report.passed:
                    raise ParityError(report)
            metadata = build_metadata(source, fmt, artifact.name, size, outputs, extra)
            if fmt == "onnx":
                from .onnx import set_onnx_metadata

                set_onnx_metadata(artifact, metadata)
            else:
                write_torchscript(module, artifact, metadata)
            write_json(tmp / METADATA_FILE, metadata)
    except ParityError as exc:
        if raise_on_failure:
            raise
        return None, exc.report
    return Path(out_dir) / FORMATS[fmt], report


def export_onnx(model_or_name: str | Path | nn.Module, out_dir: str | Path, **kwargs) -> Path:
    """ONNX export of a zoo model (name, ``.safetensors`` checkpoint or ``zoo.load`` result) into ``out_dir``
    (``model.onnx`` + ``metadata.json``); keyword arguments as :func:`export_model`."""
    return export_model(model_or_name, out_dir, fmt="onnx", **kwargs)[0]


def export_torchscript(model_or_name: str | Path | nn.Module, out_dir: str | Path, **kwargs) -> Path:
    """TorchScript export (``model.pt`` + ``metadata.json``); keyword arguments as :func:`export_model`."""
    return export_model(model_or_name, out_dir, fmt="torchscript", **kwargs)[0]


def parity_of_export_dir(export_dir: str | Path, photos: dict[str, Image.Image] | None = None,
                         tolerance: Tolerance | None = None, runtime: str = "onnxruntime",
                         precision: str = F32) -> ParityReport:
    """Re-check a published export against the checkpoint it names, on ``runtime`` at ``precision`` (ONNX
    exports; default tolerance: :func:`tolerance_for` the precision)."""
    meta = read_metadata(export_dir)
    if meta["weights"] == "random":
        raise ExportError(f"{export_dir} was exported with random weights, which cannot be rebuilt; its parity "
                          "figures (metadata 'parity') were measured at export time")
    checkpoint = meta.get("source_checkpoint") or ""
    threshold = meta["preprocessing"]["score_threshold"] if meta["task"] == DETECTION else None
    source: ExportSource = load_source(checkpoint if checkpoint.endswith(".safetensors") else meta["model"],
                                       score_threshold=threshold)
    size = tuple(meta["input"]["shape"][2:])
    fit_input_size(source.model, size)
    runner = runner_for(meta["artifact_format"], Path(export_dir) / meta["artifact"], tuple(meta["outputs"]),
                        runtime, precision)
    return check_parity(source, runner, size, photos, tolerance or tolerance_for(precision))
