"""Drawing detections on an image, and comparisons of detections with ground truth in the colours of the Objects365
paper's Fig. 9 (Shao et al., ICCV 2019); shared by `zoo predict`, `python -m training diagnose` and the service's
visualize endpoint. numpy and Pillow only."""
from __future__ import annotations

import colorsys
import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# the paper's Fig. 9 scheme
MATCHED_GT_COLOUR = (0, 200, 0)  # green
MATCHED_PRED_COLOUR = (135, 206, 250)  # light blue
FALSE_NEGATIVE_COLOUR = (230, 0, 0)  # red
FALSE_POSITIVE_COLOUR = (0, 0, 255)  # blue
CROWD_COLOUR = (150, 150, 150)  # grey: crowd regions and the predictions they excuse (COCO's ignored boxes)


def _colour(label: int) -> tuple[int, int, int]:
    hue = (label * 0.618033988749895) % 1.0  # golden-ratio spacing keeps neighbouring labels apart
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(
    image: Image.Image,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[int],
    scores: Sequence[float],
    names: Sequence[str],
    *,
    width: int | None = None,
    captions: bool = True,
) -> Image.Image:
    """Return a copy of ``image`` with each box outlined and (with ``captions``) captioned ``name score``.

    ``names[i]`` is the caption of detection ``i``; ``labels`` pick the colour."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = width or max(2, round(max(out.size) / 400))
    font = _font(out)
    for box, label, score, name in zip(boxes, labels, scores, names):
        x1, y1, x2, y2 = (float(v) for v in box)
        colour = _colour(int(label))
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        if captions:
            _caption(draw, (x1, y1), f"{name} {float(score):.2f}", colour, font)
    return out


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Detections of one image matched to its ground truth (:func:`compare`).

    ``pred_match[i]`` is the ground-truth index matched by prediction ``i`` (-1: none) and ``gt_match[j]`` the
    prediction matched to ground truth ``j`` (-1: none); boxes are ``[N, 4]`` xyxy. A crowd box (``gt_crowd``) is
    never matched nor missed, and a prediction that falls on one instead of a box of its own (``pred_ignored``) is
    no false positive, as in COCO evaluation."""

    pred_boxes: np.ndarray
    pred_labels: np.ndarray
    pred_scores: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    pred_match: np.ndarray
    gt_match: np.ndarray
    iou_threshold: float
    gt_crowd: np.ndarray
    pred_ignored: np.ndarray

    @property
    def matched_pred(self) -> np.ndarray:
        """Indices of the true-positive predictions."""
        return np.flatnonzero(self.pred_match >= 0)

    @property
    def matched_gt(self) -> np.ndarray:
        """Indices of the ground-truth boxes found by a prediction."""
        return np.flatnonzero(self.gt_match >= 0)

    @property
    def false_positives(self) -> np.ndarray:
        """Indices of the predictions that match no ground truth (nor fall on a crowd region)."""
        return np.flatnonzero((self.pred_match < 0) & ~self.pred_ignored)

    @property
    def false_negatives(self) -> np.ndarray:
        """Indices of the (non-crowd) ground-truth boxes that no prediction matches."""
        return np.flatnonzero((self.gt_match < 0) & ~self.gt_crowd)

    @property
    def pairs(self) -> np.ndarray:
        """``[M, 2]`` (prediction, ground truth) index pairs, in the order they were matched (highest score first)."""
        order = self.matched_pred[np.argsort(-self.pred_scores[self.matched_pred], kind="stable")]
        return np.stack([order, self.pred_match[order]], axis=1).reshape(-1, 2)

    @property
    def tp(self) -> int:
        return int((self.pred_match >= 0).sum())

    @property
    def fp(self) -> int:
        return len(self.false_positives)

    @property
    def fn(self) -> int:
        return len(self.false_negatives)

    @property
    def errors(self) -> int:
        """False positives plus false negatives: the count that ranks images worst first."""
        return self.fp + self.fn


def _boxes(values: Sequence[Sequence[float]] | np.ndarray, what: str) -> np.ndarray:
    boxes = np.asarray(values, dtype=np.float64).reshape(-1, 4) if len(values) else np.zeros((0, 4))
    if not np.isfinite(boxes).all():
        raise ValueError(f"{what}: boxes must be finite numbers")
    return boxes


def _pair_iou(a: np.ndarray, b: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU ``[N]`` of the xyxy boxes ``a[k]`` and ``b[k]`` (0 where the union is empty); where ``crowd[k]``, COCO's
    overlap with a crowd region: the intersection over the area of ``a[k]``."""
    inter = np.clip(np.minimum(a[:, 2:], b[:, 2:]) - np.maximum(a[:, :2], b[:, :2]), 0, None).prod(axis=1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    union = np.where(crowd, area_a, area_a + np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1) - inter)
    iou: np.ndarray = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou


def compare(pred_boxes: Sequence[Sequence[float]] | np.ndarray, pred_labels: Sequence[int] | np.ndarray,
            pred_scores: Sequence[float] | np.ndarray, gt_boxes: Sequence[Sequence[float]] | np.ndarray,
            gt_labels: Sequence[int] | np.ndarray, iou_threshold: float = 0.5, *,
            gt_crowd: Sequence[bool] | np.ndarray | None = None) -> Comparison:
    """Match predictions to ground truth as COCO evaluation does at one IoU threshold: predictions in order of
    decreasing score each take the still unmatched ground-truth box of the same label with the highest IoU, if that
    IoU is at least ``iou_threshold``. Failing that, a prediction overlapping a crowd region (``gt_crowd``, COCO's
    ``iscrowd``) of its label by at least the threshold (intersection over the prediction's area) is ignored."""
    pb, gb = _boxes(pred_boxes, "predictions"), _boxes(gt_boxes, "ground truth")
    pl, ps = np.asarray(pred_labels, dtype=np.int64).reshape(-1), np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    gl = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
    if not len(pl) == len(ps) == len(pb) or len(gl) != len(gb):
        raise ValueError(f"compare: {len(pb)} predicted boxes, {len(pl)} labels, {len(ps)} scores; {len(gb)} "
                         f"ground-truth boxes, {len(gl)} labels: each list needs one entry per box")
    crowd = np.zeros(len(gb), dtype=bool) if gt_crowd is None else np.asarray(gt_crowd, dtype=bool).reshape(-1)
    if len(crowd) != len(gb):
        raise ValueError(f"compare: {len(crowd)} crowd flags for {len(gb)} ground-truth boxes")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"compare: iou_threshold must be in (0, 1], got {iou_threshold}")
    iou = np.full((len(pb), len(gb)), -1.0)  # other classes and overlaps below the threshold never match
    rows, cols = np.nonzero(pl[:, None] == gl[None, :])
    same = _pair_iou(pb[rows], gb[cols], crowd[cols])
    ok = same >= iou_threshold
    iou[rows[ok], cols[ok]] = same[ok]
    pred_match = np.full(len(pb), -1, dtype=np.int64)
    gt_match = np.full(len(gb), -1, dtype=np.int64)
    ignored = np.zeros(len(pb), dtype=bool)
    free = ~crowd  # ground truth a prediction may still take
    has_crowd = bool(crowd.any())
    order = np.argsort(-ps, kind="stable")
    for i in order[(iou[order] >= 0).any(axis=1)].tolist():  # only predictions with a candidate
        row = np.where(free, iou[i], -1.0)
        j = int(row.argmax())
        if row[j] >= 0:
            pred_match[i], gt_match[j], free[j] = j, i, False
        elif has_crowd:
            ignored[i] = bool((iou[i][crowd] >= 0).any())
    return Comparison(pb, pl, ps, gb, gl, pred_match, gt_match, float(iou_threshold), crowd, ignored)


def _font(image: Image.Image) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(12, round(max(image.size) / 60)))


def _caption(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, colour: tuple[int, int, int],
             font: ImageFont.ImageFont | ImageFont.FreeTypeFont, below: bool = False) -> None:
    """``text`` on a ``colour`` label at the box corner ``xy``: above it (or, ``below``, under it) where it fits in
    the image, else inside the box."""
    x, y = xy
    tx1, ty1, tx2, ty2 = draw.textbbox((0, 0), text, font=font)
    h = ty2 - ty1 + 2
    fits = y + h <= draw.im.size[1] if below else y - h >= 0
    top = (y if fits else y - h) if below else (y - h if fits else y)
    draw.rectangle((x, top, x + tx2 - tx1 + 4, top + h), fill=colour)
    draw.text((x + 2, top - ty1), text, fill=(0, 0, 0) if sum(colour) > 380 else (255, 255, 255), font=font)


def draw_comparison(image: Image.Image, comparison: Comparison, names: Sequence[str] | None = None, *,
                    width: int | None = None, captions: bool = True, legend: bool = True) -> Image.Image:
    """A copy of ``image`` with ``comparison`` drawn in the paper's Fig. 9 colours: matched ground truth green,
    matched predictions light blue, false negatives red, false positives blue; crowd regions and the predictions
    they excuse grey. Ground truth is outlined twice as wide (``2 * width``, inwards) under the predictions, so a
    prediction on the very same box leaves it visible.

    ``names[label - 1]`` names a label (zoo's labels 1..K, as ``model.categories``); without ``names`` the captions
    show the label number. ``captions`` writes the name on ground truth and ``name score`` on predictions.
    ``legend`` adds a strip below the image naming the colours with their counts; the image itself keeps its pixels
    and coordinates."""
    picture = image.convert("RGB").copy()
    draw = ImageDraw.Draw(picture)
    width = width or max(2, round(max(picture.size) / 400))
    font = _font(picture)
    c = comparison

    def name(label: int) -> str:
        return names[label - 1] if names is not None and 1 <= label <= len(names) else str(label)

    gt_colours = [CROWD_COLOUR if crowd else MATCHED_GT_COLOUR if m >= 0 else FALSE_NEGATIVE_COLOUR
                  for crowd, m in zip(c.gt_crowd.tolist(), c.gt_match.tolist())]
    pred_colours = [CROWD_COLOUR if ignored else MATCHED_PRED_COLOUR if m >= 0 else FALSE_POSITIVE_COLOUR
                    for ignored, m in zip(c.pred_ignored.tolist(), c.pred_match.tolist())]
    layers = ((c.gt_boxes, c.gt_labels, None, gt_colours, True),
              (c.pred_boxes, c.pred_labels, c.pred_scores, pred_colours, False))
    for boxes, labels, scores, colours, is_gt in layers:
        for k, colour in enumerate(colours):
            x1, y1, x2, y2 = (float(v) for v in boxes[k])
            draw.rectangle((x1, y1, x2, y2), outline=colour, width=2 * width if is_gt else width)
            if captions:
                text = name(int(labels[k])) + ("" if scores is None else f" {float(scores[k]):.2f}")
                _caption(draw, (x1, y2 if is_gt else y1), text, colour, font, below=is_gt)
    return _with_legend(picture, c, font) if legend else picture


def _with_legend(picture: Image.Image, c: Comparison, font: ImageFont.ImageFont | ImageFont.FreeTypeFont
                 ) -> Image.Image:
    entries = [(MATCHED_GT_COLOUR, f"matched ground truth {c.tp}"), (MATCHED_PRED_COLOUR, f"matched prediction {c.tp}"),
               (FALSE_NEGATIVE_COLOUR, f"false negative {c.fn}"), (FALSE_POSITIVE_COLOUR, f"false positive {c.fp}")]
    if c.gt_crowd.any():
        entries.append((CROWD_COLOUR, f"crowd region {int(c.gt_crowd.sum())}, ignored {int(c.pred_ignored.sum())}"))
    probe = ImageDraw.Draw(picture)
    sizes = [probe.textbbox((0, 0), text, font=font) for _, text in entries]
    line = round(max(b[3] - b[1] for b in sizes)) + 6  # Pillow types text boxes as floats (whole pixels here)
    swatch = line - 6
    cells = [swatch + 6 + round(b[2] - b[0]) + 14 for b in sizes]
    rows, x = 1, 6  # wrap the entries onto as many rows as the image width needs
    for w in cells:
        if x + w > picture.width and x > 6:
            rows, x = rows + 1, 6
        x += w
    out = Image.new("RGB", (picture.width, picture.height + rows * line + 6), (255, 255, 255))
    out.paste(picture, (0, 0))
    draw = ImageDraw.Draw(out)
    x, y = 6, picture.height + 3
    for (colour, text), box, w in zip(entries, sizes, cells):
        if x + w > picture.width and x > 6:
            x, y = 6, y + line
        draw.rectangle((x, y + 3, x + swatch, y + 3 + swatch), fill=colour)
        draw.text((x + swatch + 6, y + 3 - box[1]), text, fill=(0, 0, 0), font=font)
        x += w
    return out


def contact_sheet(pictures: Sequence[Image.Image], captions: Sequence[str] | None = None, *, columns: int = 4,
                  thumb: int = 256) -> Image.Image:
    """A grid of ``pictures`` scaled to fit ``thumb`` x ``thumb`` cells, ``columns`` wide, in the given order, each
    with its caption under it (cut with "..." where wider than the cell); the sheet is ``min(columns, n) * thumb``
    wide and ``ceil(n / columns)`` rows of ``thumb`` plus a caption line high."""
    if not pictures:
        raise ValueError("contact_sheet: no pictures")
    if columns < 1 or thumb < 16:
        raise ValueError(f"contact_sheet: columns must be >= 1 and thumb >= 16, got {columns} and {thumb}")
    font = ImageFont.load_default(size=max(10, thumb // 20))
    text_h = round(font.getbbox("Ag")[3]) + 4 if captions is not None else 0
    cols = min(columns, len(pictures))
    rows = math.ceil(len(pictures) / cols)
    sheet = Image.new("RGB", (cols * thumb, rows * (thumb + text_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, picture in enumerate(pictures):
        small = picture.convert("RGB")
        small.thumbnail((thumb, thumb))
        x, y = (k % cols) * thumb, (k // cols) * (thumb + text_h)
        sheet.paste(small, (x + (thumb - small.width) // 2, y + (thumb - small.height) // 2))
        if captions is not None:
            draw.text((x + 3, y + thumb + 1), _fit(captions[k], font, thumb - 6), fill=(0, 0, 0), font=font)
    return sheet


def _fit(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> str:
    """``text``, or its longest head that fits ``width`` pixels with "..." after it."""
    if font.getlength(text) <= width:
        return text
    keep = len(text)
    while keep and font.getlength(text[:keep] + "...") > width:
        keep -= 1
    return text[:keep] + "..."
