"""What the onnxruntime and Triton backends share: reading an export's metadata, letterboxing photos into its fixed
input (``zoo.letterbox``, the same step its parity check and Triton repository use) and mapping outputs back."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.vocabulary import SEGMENTATION

from .base import Detections, Result

Runner = Callable[[np.ndarray], dict[str, np.ndarray]]  # images [B, 3, H, W] float32 -> outputs by name


def served_outputs(task: str) -> list[str]:
    """The export graph's outputs a backend fetches for ``task``: the label map of a segmenter (not its logits),
    every output of a detector."""
    from export.contract import DETECTION_OUTPUTS

    return ["labels"] if task == SEGMENTATION else list(DETECTION_OUTPUTS)


def run_letterboxed(runner: Runner, images: list[np.ndarray], size: tuple[int, int], task: str,
                    pad: float = 0.0) -> list[Result]:
    """Letterbox ``images`` into one batch (filling with ``pad``), run it, and return results in each image's own
    pixels."""
    from zoo.letterbox import boxes_to_photo, labels_to_photo, letterbox

    arrays, scales = [], []
    for image in images:
        array, scale = letterbox(Image.fromarray(image), size, pad)
        arrays.append(array)
        scales.append(scale)
    out = runner(np.stack(arrays))
    results: list[Result] = []
    for b, (image, scale) in enumerate(zip(images, scales)):
        height, width = image.shape[:2]
        if task == SEGMENTATION:
            results.append(labels_to_photo(out["labels"][b], scale, (height, width)))
            continue
        n = int(out["num_detections"][b])
        results.append(Detections(
            boxes=boxes_to_photo(out["boxes"][b, :n], scale, (height, width)),
            scores=out["scores"][b, :n].astype(np.float32),
            labels=out["labels"][b, :n].astype(np.int64),
        ))
    return results


def check_onnx_file(path: Path) -> None:
    """Raise a one-line ``ExportError`` naming ``path`` when it does not parse as an ONNX model (truncated,
    overwritten); a runtime's own error about such a file runs to many lines."""
    import onnx

    from export.artifact import ExportError

    try:
        onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError, OSError
        raise ExportError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None


def export_dir_of(path: Path) -> Path:
    """An export folder, given the folder or the ``model.onnx`` inside it."""
    return path.parent if path.suffix == ".onnx" else path
