"""Parity of an export with the eager model on real photos.

Both sides see the same letterboxed photo (:mod:`zoo.letterbox`) at the export's fixed size: the eager model as
a one-image list (its own transform), the export as one batch of all photos (so dynamic batching is exercised too).
Per photo: matched-detection recall at IoU >= 0.99 (the tolerance's ``match_iou``) with the same label, the largest
box-corner difference (px) and score difference over matched pairs. Eager detections within ``score`` tolerance of
the cutoff (threshold, or the export's last kept score when it is full) are not required, since either side may
legitimately keep or drop them.
Segmentation: pixel agreement of the argmax labels and the largest logit difference.

``Tolerance()`` is the fp32 bar every export must pass; :data:`BF16_TOLERANCE` is the stated bar of a bfloat16
runtime (OpenVINO ``--precision bf16``), whose 8-bit mantissa moves boxes by tenths of a pixel and scores by about
0.01, too much for IoU 0.99 matching on small boxes (``python -m export.parity EXPORT_DIR --runtime openvino
--precision bf16`` prints the figures of an export; benchmarks/bench_export_latency.py records them per model).

Run ``python -m export.parity NAME|CHECKPOINT|EXPORT_DIR`` (see ``--help``).
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from zoo.letterbox import letterbox
from zoo.vocabulary import SEGMENTATION

from .artifact import ExportError
from .source import ExportSource

Runner = Callable[[np.ndarray], dict[str, np.ndarray]]
SKIMAGE_PHOTOS: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket")


@dataclass(frozen=True)
class Tolerance:
    box_px: float = 1.0  # largest corner difference of a matched box, input pixels
    score: float = 1e-3  # largest score difference of a matched detection
    recall: float = 0.97  # matched share of the eager detections that must be present
    pixel_agreement: float = 0.999  # segmentation: share of equal argmax labels
    logit: float = 1e-2  # segmentation: largest absolute logit difference
    match_iou: float = 0.99  # a detection matches an eager one with the same label at this IoU or more


BF16_TOLERANCE = Tolerance(box_px=2.0, score=0.03, recall=0.9, pixel_agreement=0.995, logit=0.5, match_iou=0.9)


@dataclass
class ParityReport:
    passed: bool
    tolerance: Tolerance
    images: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "tolerance": asdict(self.tolerance), "images": self.images,
                "failures": self.failures}

    def table(self) -> str:
        if not self.images:
            return "(no images)"
        keys = list(self.images[0])
        rows = [keys] + [[_fmt(img[k]) for k in keys] for img in self.images]
        widths = [max(len(r[i]) for r in rows) for i in range(len(keys))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
        lines.append(f"parity {'PASSED' if self.passed else 'FAILED'} (tolerance: {asdict(self.tolerance)})")
        lines.extend(f"  - {f}" for f in self.failures)
        return "\n".join(lines)


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def sample_photos(names: tuple[str, ...] = SKIMAGE_PHOTOS) -> dict[str, Image.Image]:
    """scikit-image's public-domain/CC0 sample photos (shipped inside its wheel)."""
    try:
        from skimage import data
    except ImportError:
        raise ExportError("parity photos need scikit-image: pip install scikit-image, or pass photo files, or skip "
                          "the parity check (--no-parity)") from None
    return {name: Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB") for name in names}


def load_photos(paths: list[str | Path]) -> dict[str, Image.Image]:
    from zoo.letterbox import decode_image

    photos = {}
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise FileNotFoundError(f"photo not found: {path}")
        photos[path.name] = decode_image(path.read_bytes())
    return photos


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``a [N, 4]`` and ``b [M, 4]``."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def compare_detections(ref: dict[str, np.ndarray], out: dict[str, np.ndarray], *, score_threshold: float,
                       max_detections: int, tol: Tolerance) -> dict:
    """Figures of one image: ``ref`` boxes/scores/labels (eager), ``out`` the export's valid rows."""
    n_out = len(out["scores"])
    cutoff = score_threshold
    if n_out >= max_detections > 0:
        cutoff = max(cutoff, float(out["scores"][-1]))
    required = np.flatnonzero(ref["scores"] >= cutoff + tol.score)
    ious = _iou(ref["boxes"], out["boxes"]) if len(ref["scores"]) and n_out else np.zeros((len(ref["scores"]), 0))
    used = np.zeros(n_out, dtype=bool)
    box_diff, score_diff, matched_required = 0.0, 0.0, 0
    required_set = set(required.tolist())
    for i in np.argsort(-ref["scores"], kind="stable"):
        candidates = np.flatnonzero((~used) & (out["labels"] == ref["labels"][i]) & (ious[i] >= tol.match_iou))
        if candidates.size == 0:
            continue
        j = candidates[np.argmax(ious[i, candidates])]
        used[j] = True
        box_diff = max(box_diff, float(np.abs(ref["boxes"][i] - out["boxes"][j]).max()))
        score_diff = max(score_diff, float(abs(ref["scores"][i] - out["scores"][j])))
        matched_required += int(i in required_set)
    recall = matched_required / len(required) if len(required) else 1.0
    return {"eager_detections": len(ref["scores"]), "export_detections": int(n_out),
            "required": len(required), "recall": recall, "max_box_diff_px": box_diff,
            "max_score_diff": score_diff}


def check_parity(source: ExportSource, runner: Runner, image_size: tuple[int, int],
                 photos: dict[str, Image.Image] | None = None, tol: Tolerance = Tolerance()) -> ParityReport:
    """Run eager and export on ``photos`` (default: :func:`sample_photos`) and compare."""
    photos = photos if photos is not None else sample_photos()
    if not photos:
        raise ValueError("parity needs at least one photo")
    pad = source.preprocessing.pad_value
    batch = np.stack([letterbox(img, image_size, pad)[0] for img in photos.values()])
    exported = runner(batch)
    report = ParityReport(passed=True, tolerance=tol)
    with torch.inference_mode():
        for b, name in enumerate(photos):
            x = torch.from_numpy(batch[b])
            if source.task == SEGMENTATION:
                logits = source.model(x[None])["out"][0].numpy()
                figures = {"pixel_agreement": float((logits.argmax(0) == exported["labels"][b]).mean()),
                           "max_logit_diff": float(np.abs(logits - exported["logits"][b]).max())}
                bad = figures["pixel_agreement"] < tol.pixel_agreement or figures["max_logit_diff"] > tol.logit
            else:
                ref = {k: v.numpy() for k, v in source.model([x])[0].items()}
                n = int(exported["num_detections"][b])
                out = {k: exported[k][b, :n] for k in ("boxes", "scores", "labels")}
                figures = compare_detections(ref, out, score_threshold=source.preprocessing.score_threshold,
                                             max_detections=exported["scores"].shape[1], tol=tol)
                bad = (figures["recall"] < tol.recall or figures["max_box_diff_px"] > tol.box_px
                       or figures["max_score_diff"] > tol.score)
            report.images.append({"image": name, **figures})
            if bad:
                report.passed = False
                report.failures.append(f"{name}: {figures}")
    return report


if __name__ == "__main__":
    # ``python -m export.parity``: the command line lives in export.cli (which imports this module, not the reverse).
    from export.cli import parity_main

    sys.exit(parity_main())
