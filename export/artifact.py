"""Artefact folders: metadata that travels with every export, and atomic publication (temp folder, then rename)."""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.atomic import atomic_dir

if TYPE_CHECKING:
    from .source import ExportSource

FORMAT = "objects365-zoo-export/1"
METADATA_FILE = "metadata.json"
MIN_INPUT_SIDE, MAX_INPUT_PIXELS = 32, 4096 * 4096  # the input sizes export.graphs accepts


class ExportError(RuntimeError):
    """An export could not be produced; nothing was written."""


def exporter_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch
    import torchvision

    import zoo

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "objects365-zoo": zoo.__version__}


def build_metadata(source: ExportSource, fmt: str, artifact: str, image_size: tuple[int, int],
                   outputs: tuple[str, ...], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The facts an export carries (ONNX ``metadata_props``, TorchScript extra file, and the JSON beside it)."""
    height, width = image_size
    meta: dict[str, Any] = {
        "format": FORMAT,
        "artifact": artifact,
        "artifact_format": fmt,
        "model": source.name,
        "task": source.task,
        "arch": source.arch,
        "version": source.version,
        "categories_key": source.categories_key,
        "categories": list(source.categories),
        "label_offset": source.label_offset,
        "preprocessing": source.preprocessing.to_dict(),
        "input": {"name": "images", "shape": ["batch", 3, height, width], "dtype": "float32",
                  "layout": "NCHW, RGB on [0, 1]; photos letterboxed (zoo.letterbox)"},
        "outputs": list(outputs),
        "source_checkpoint": source.checkpoint,
        "source_sha256": source.sha256,
        "weights": source.weights,
        "exporter": exporter_versions(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    meta.update(extra or {})
    return meta


def read_metadata(artifact_dir: str | Path) -> dict[str, Any]:
    """An export folder's metadata, checked before anything trusts it: the artefact it names is a file inside the
    folder (a relative path without ``..``) and the input it declares is ``[batch, 3, H, W]`` with H, W >= 32 and at
    most 4096 x 4096 pixels, as :func:`export.export_model` writes them. :class:`ExportError` names the file at fault
    and what was expected of it."""
    folder = Path(artifact_dir)
    path = folder / METADATA_FILE
    if not path.is_file():
        raise ExportError(f"{path}: missing ({folder} is not an export folder: expected {METADATA_FILE} beside the "
                          "model file)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: not readable as JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ExportError(f"{path}: expected a JSON object, found {type(meta).__name__}")
    _check_artifact(path, meta.get("artifact"))
    _check_input(path, meta.get("input"))
    return meta


def input_size(meta: dict[str, Any]) -> tuple[int, int]:
    """The fixed ``(H, W)`` input of an export, from its metadata."""
    height, width = meta["input"]["shape"][2:]
    return int(height), int(width)


def pad_value(meta: dict[str, Any]) -> float:
    """The letterbox fill of an export (exports made before it was recorded padded with 0)."""
    return float(meta["preprocessing"].get("pad_value", 0.0))


def _check_artifact(path: Path, name: Any) -> None:
    """``name`` (from the metadata file ``path``) must be a file inside the export folder."""
    if not isinstance(name, str) or not name:
        raise ExportError(f"{path}: 'artifact' must name the model file, got {name!r}")
    folder = path.parent
    artifact = folder / name
    if Path(name).is_absolute() or ".." in Path(name).parts or not artifact.resolve().is_relative_to(folder.resolve()):
        raise ExportError(f"{path}: 'artifact' must be a relative path inside the export folder without '..', got "
                          f"{name!r}")
    if not artifact.is_file():
        raise ExportError(f"{artifact}: missing (the model file that {path} names)")


def _check_input(path: Path, declared: Any) -> None:
    """The ``input`` that the metadata file ``path`` declares must be one an export can have, so that nothing
    allocates an absurd batch from it."""
    shape = declared.get("shape") if isinstance(declared, dict) else None
    if isinstance(shape, (list, tuple)) and len(shape) == 4:
        _, channels, height, width = shape
    else:
        channels = height = width = None
    if not (channels == 3 and all(type(side) is int and side >= MIN_INPUT_SIDE for side in (height, width))
            and height * width <= MAX_INPUT_PIXELS):
        raise ExportError(f"{path}: input shape must be [batch, 3, H, W] with integers H, W >= {MIN_INPUT_SIDE} and "
                          f"H x W <= {MAX_INPUT_PIXELS} pixels, got {shape!r}")


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def staged_dir(out_dir: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temp folder beside ``out_dir``; on success it becomes ``out_dir`` in one rename, on error it
    is removed and ``out_dir`` is left as it was."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ExportError(f"{out_dir} exists and is not empty (pass overwrite=True / --overwrite to replace it)")
    with contextlib.ExitStack() as stack:
        try:
            tmp = stack.enter_context(atomic_dir(out_dir))
        except OSError as exc:
            raise ExportError(f"cannot write into {out_dir.parent}: {exc.strerror or exc}") from None
        yield tmp
