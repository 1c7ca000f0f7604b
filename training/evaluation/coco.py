"""COCO box mAP with pycocotools' exact semantics, evaluated in category chunks.

COCO evaluation is independent per category, so categories are evaluated in chunks (bounded memory) and the
``precision [T, R, K, A, M]`` / ``recall [T, K, A, M]`` arrays are assembled along K. Three backends:

- ``"numpy"`` (default): our vectorised re-implementation of pycocotools' ``evaluateImg`` + ``accumulate``.
  Greedy matching runs over all (image, category) groups of a chunk at once, one detection rank at a time, with
  ground truth padded to a power of two per bucket. It reproduces pycocotools' choices: detections sorted by score
  (stable), at most ``max_dets[-1]`` per (image, category), best-IoU match preferring non-ignored ground truth with
  ties going to the later box, crowd boxes matched by intersection over detection area and any number of times,
  unmatched detections outside the area range ignored, and (as pycocotools) a match to a ground-truth box whose
  id is 0 counted as unmatched. Why not the libraries: they keep Python objects per annotation and per (image,
  category) pair; at the Objects365 val shape (38K images x 365 categories x 100 detections per image)
  faster-coco-eval needs ~21 GB and about 2 minutes of a core, pycocotools ~32 GB
  (``benchmarks/bench_coco_eval.py`` measures them).
- ``"faster-coco-eval"`` and ``"pycocotools"``: the libraries, run on each chunk (references).

Summary statistics are computed from the arrays (pycocotools' ``summarize()`` hard-codes maxDets=100 for AP).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# pycocotools' Params, with the same expressions so that the floats are identical.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0, 1e5**2),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}
BACKENDS = ("numpy", "faster-coco-eval", "pycocotools")


@dataclass(frozen=True)
class GroundTruth:
    """COCO ground truth as arrays; ``image`` indexes ``image_ids`` (sorted)."""

    image_ids: np.ndarray
    category_ids: np.ndarray
    category_names: tuple[str, ...]
    image: np.ndarray
    category: np.ndarray
    boxes: np.ndarray
    area: np.ndarray
    iscrowd: np.ndarray
    ann_ids: np.ndarray
    images: tuple[dict, ...]


@dataclass(frozen=True)
class Detections:
    """Detections as arrays: image index into ``GroundTruth.image_ids``, category id, xywh box, score."""

    image: np.ndarray
    category: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class CocoResult:
    """Accumulated COCO arrays (pycocotools layout, -1 where a category has no ground truth) and summaries."""

    precision: np.ndarray  # [T, R, K, A, M]
    recall: np.ndarray  # [T, K, A, M]
    category_ids: tuple[int, ...]
    category_names: tuple[str, ...]
    max_dets: tuple[int, ...]

    @property
    def stats(self) -> dict[str, float]:
        """AP, AP50, AP75, APs/m/l (at max_dets[-1]), AR at each max_dets, ARs/m/l; -1 when undefined."""
        last = len(self.max_dets) - 1
        out = {
            "AP": _mean_valid(self.precision[:, :, :, 0, last]),
            "AP50": _mean_valid(self.precision[_iou_index(0.5), :, :, 0, last]),
            "AP75": _mean_valid(self.precision[_iou_index(0.75), :, :, 0, last]),
        }
        for a, label in ((1, "s"), (2, "m"), (3, "l")):
            out[f"AP{label}"] = _mean_valid(self.precision[:, :, :, a, last])
        for m, dets in enumerate(self.max_dets):
            out[f"AR{dets}"] = _mean_valid(self.recall[:, :, 0, m])
        for a, label in ((1, "s"), (2, "m"), (3, "l")):
            out[f"AR{label}"] = _mean_valid(self.recall[:, :, a, last])
        return out

    def per_category(self) -> list[dict[str, Any]]:
        """One row per category: id, name, AP, AP50, AP75, APs, APm, APl, AR (-1 when undefined)."""
        rows = []
        for cid, name in zip(self.category_ids, self.category_names):
            one = self.subset([cid]).stats
            rows.append({"id": cid, "name": name, **{key: one[key] for key in ("AP", "AP50", "AP75", "APs", "APm",
                                                                                "APl")},
                         "AR": one[f"AR{self.max_dets[-1]}"]})
        return rows

    def subset(self, categories: Sequence[int | str]) -> CocoResult:
        """The result restricted to some categories (ids or names): categories are evaluated independently."""
        ks = _resolve_categories(categories, self.category_ids, self.category_names)
        idx = [self.category_ids.index(c) for c in ks]
        return CocoResult(self.precision[:, :, idx], self.recall[:, idx], tuple(ks),
                          tuple(self.category_names[i] for i in idx), self.max_dets)

    def table(self) -> str:
        """Per-category AP table as aligned text (percentages)."""
        width = max([4, *map(len, self.category_names)])
        lines = [f"{'id':>5}  {'name':<{width}}  " + "  ".join(f"{k:>6}" for k in ("AP", "AP50", "AP75", "APs", "APm",
                                                                                  "APl"))]
        for row in self.per_category():
            cells = "  ".join(f"{100 * row[k]:6.2f}" if row[k] >= 0 else f"{'-':>6}"
                              for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"))
            lines.append(f"{row['id']:>5}  {row['name']:<{width}}  {cells}")
        return "\n".join(lines)


def _iou_index(threshold: float) -> int:
    return int(np.flatnonzero(np.isclose(IOU_THRESHOLDS, threshold))[0])


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _resolve_categories(categories: Sequence[int | str], ids: Sequence[int], names: Sequence[str]) -> list[int]:
    """Category ids (sorted, unique) for ids or names; unknown entries raise ValueError."""
    by_name = {n: i for i, n in zip(ids, names)}
    known = {int(i) for i in ids}
    out = set()
    for c in categories:
        if isinstance(c, str):
            if c not in by_name:
                raise ValueError(f"unknown category name {c!r}")
            out.add(int(by_name[c]))
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            if int(c) not in known:
                raise ValueError(f"unknown category id {c}")
            out.add(int(c))
        else:
            raise TypeError(f"a category must be an id (int) or a name (str), got {c!r}")
    if not out:
        raise ValueError("categories must not be empty")
    return sorted(out)


def load_ground_truth(source: str | os.PathLike | Mapping[str, Any]) -> GroundTruth:
    """Read a COCO-format ground truth (path to JSON or dict) into arrays."""
    if isinstance(source, (str, os.PathLike)):
        with open(source) as f:
            source = json.load(f)
    if not isinstance(source, Mapping) or not {"images", "annotations", "categories"} <= source.keys():
        raise ValueError("ground truth must be a COCO dict with 'images', 'annotations' and 'categories'")
    try:
        images = dict(zip(_ids([img["id"] for img in source["images"]], "image id").tolist(), source["images"]))
        cat_order = _ids([c["id"] for c in source["categories"]], "category id")
    except (KeyError, TypeError) as e:
        raise ValueError(f"malformed ground-truth image or category (need id): {e}") from e
    image_ids = np.array(sorted(images), dtype=np.int64)
    order = np.argsort(cat_order, kind="stable")
    cats = [source["categories"][k] for k in order]
    category_ids = cat_order[order]
    if len(np.unique(category_ids)) != len(category_ids):
        raise ValueError("ground truth has duplicate category ids")
    anns = source["annotations"]
    try:
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        ann_img = _ids([a["image_id"] for a in anns], "annotation image_id")
        category = _ids([a["category_id"] for a in anns], "annotation category_id")
        area = np.array([a["area"] if "area" in a else a["bbox"][2] * a["bbox"][3] for a in anns], dtype=np.float64)
        iscrowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
        ann_ids = _ids([a["id"] for a in anns], "annotation id")
    except (KeyError, TypeError) as e:
        raise ValueError(f"malformed ground-truth annotation (need id, image_id, category_id, bbox [4]): {e}") from e
    if not np.isfinite(boxes).all() or not np.isfinite(area).all():
        raise ValueError("ground-truth boxes and areas must be finite")
    if len(np.unique(ann_ids)) != len(ann_ids):
        raise ValueError("ground truth has duplicate annotation ids")
    image = _index_of(ann_img, image_ids, "ground-truth annotation refers to image id")
    _index_of(category, category_ids, "ground-truth annotation has category id")
    names = tuple(str(c.get("name", c["id"])) for c in cats)
    return GroundTruth(image_ids, category_ids, names, image, category, boxes, area, iscrowd, ann_ids,
                       tuple(images[i] for i in image_ids.tolist()))


def _ids(values: Any, what: str) -> np.ndarray:
    """Integer ids as exact int64 (never through float64, which cannot hold every integer above 2^53): integers
    within int64, or integral floats below 2^53 in magnitude (a larger float may already be a neighbouring id)."""
    arr = np.asarray(values).reshape(-1)
    if arr.dtype.kind == "f" and isinstance(values, (list, tuple)):  # ints among floats: check each as written
        arr = np.array(values, dtype=object).reshape(-1)
    if arr.dtype.kind == "O":
        out = []
        for item in arr.tolist():
            v = item.item() if isinstance(item, np.generic) else item
            if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
                v = int(v)
            if not isinstance(v, int) or isinstance(v, bool) or not -(2**63) <= v < 2**63:
                raise ValueError(f"{what} must be an integer within int64 (as a float: below 2^53), got {v!r}")
            out.append(v)
        return np.array(out, dtype=np.int64)
    if arr.dtype.kind == "u" and arr.size and arr.max() >= 2**63:
        raise ValueError(f"{what} beyond int64: {arr.max()}")
    if arr.dtype.kind == "f" and not (np.isfinite(arr) & (arr == np.round(arr)) & (np.abs(arr) < 2**53)).all():
        raise ValueError(f"{what} must be integers (as floats: below 2^53, where float64 is still exact)")
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{what} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _index_of(values: np.ndarray, table: np.ndarray, what: str) -> np.ndarray:
    """Positions of ``values`` in the sorted ``table``; a value not in it raises ValueError."""
    if not len(table):
        pos, bad = np.zeros(len(values), np.int64), np.ones(len(values), dtype=bool)
    else:
        pos = np.searchsorted(table, values)
        bad = (pos >= len(table)) | (table[np.minimum(pos, len(table) - 1)] != values)
    if bad.any():
        missing = sorted(set(values[bad].tolist()))
        raise ValueError(f"{what} not in the ground truth: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    return pos


def load_detections(source: Any, gt: GroundTruth) -> Detections:
    """Detections from a list of COCO result dicts, a dict of arrays (image_id, category_id, bbox [N, 4] xywh,
    score), a float array ``[N, 7]`` (image_id, x, y, w, h, score, category_id: pycocotools' layout), or a path
    to a ``.json`` results file or ``.npy`` array. Ids stay exact int64 (up to 2^63 - 1); the float array layout
    can only hold ids below 2^53 and refuses larger ones."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix == ".npy":
            source = np.load(path)
        else:
            with open(path) as f:
                source = json.load(f)
    image_id: np.ndarray | list[Any]  # a list keeps each id as written (see _ids)
    category: np.ndarray | list[Any]
    if isinstance(source, np.ndarray):
        if source.ndim != 2 or source.shape[1] != 7:
            raise ValueError(f"a detection array must be [N, 7] (image_id, x, y, w, h, score, category_id), "
                             f"got shape {source.shape}")
        image_id, boxes, scores, category = source[:, 0], source[:, 1:5], source[:, 5], source[:, 6]
    elif isinstance(source, Mapping):
        try:
            image_id, category = source["image_id"], source["category_id"]
            boxes, scores = np.asarray(source["bbox"], dtype=np.float64), np.asarray(source["score"])
        except KeyError as e:
            raise ValueError(f"detection dict needs image_id, category_id, bbox, score arrays: missing {e}") from e
    elif isinstance(source, Sequence):
        try:
            image_id = [d["image_id"] for d in source]
            category = [d["category_id"] for d in source]
            boxes = np.array([d["bbox"] for d in source], dtype=np.float64)
            scores = np.array([d["score"] for d in source], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed detection (need image_id, category_id, bbox [4], score): {e}") from e
    else:
        raise TypeError(f"unsupported detections type {type(source).__name__}")
    n = len(image_id)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if n else np.zeros((0, 4))
    if not (len(category) == len(boxes) == len(scores) == n):
        raise ValueError("detection fields have different lengths")
    scores = np.asarray(scores, dtype=np.float64)
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise ValueError("detection boxes and scores must be finite")
    image = _index_of(_ids(image_id, "detection image_id"), gt.image_ids, "detection image id")
    category = _ids(category, "detection category_id")
    _index_of(category, gt.category_ids, "detection category id")
    return Detections(image, category, boxes, scores)


def results_from_outputs(image_ids: Sequence[int], outputs: Sequence[Mapping[str, Any]],
                         category_ids: Sequence[int]) -> dict[str, np.ndarray]:
    """Detector outputs (the zoo contract: ``boxes`` [N, 4] xyxy pixels, ``scores``, ``labels`` with label l naming
    ``category_ids[l - 1]``, 0 = background) as detection columns for :func:`evaluate_coco` (bbox in xywh)."""
    if len(image_ids) != len(outputs):
        raise ValueError(f"{len(image_ids)} image ids for {len(outputs)} outputs")
    table = np.asarray(category_ids, dtype=np.int64)
    columns: dict[str, list[np.ndarray]] = {"image_id": [], "category_id": [], "bbox": [], "score": []}
    for image_id, out in zip(image_ids, outputs):
        boxes = np.asarray(_to_numpy(out["boxes"]), dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(_to_numpy(out["labels"]), dtype=np.int64).reshape(-1)
        if len(labels) and (labels.min() < 1 or labels.max() > len(table)):
            raise ValueError(f"labels must be in [1, {len(table)}] (0 is background), got {labels.min()}..."
                             f"{labels.max()}")
        columns["image_id"].append(np.full(len(boxes), int(image_id), dtype=np.int64))
        columns["category_id"].append(table[labels - 1])
        columns["bbox"].append(np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1))
        columns["score"].append(np.asarray(_to_numpy(out["scores"]), dtype=np.float64).reshape(-1))
    empty = {"image_id": np.zeros(0, np.int64), "category_id": np.zeros(0, np.int64), "bbox": np.zeros((0, 4)),
             "score": np.zeros(0)}
    return {k: np.concatenate(v) if v else empty[k] for k, v in columns.items()}


def _to_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def evaluate_coco(
    gt: str | os.PathLike | Mapping[str, Any] | GroundTruth,
    detections: Any,
    *,
    categories: Sequence[int | str] | None = None,
    backend: str = "numpy",
    max_dets: Sequence[int] = (1, 10, 100),
    chunk_size: int | None = 32,
) -> CocoResult:
    """COCO bbox evaluation of ``detections`` against ``gt``.

    ``categories``: evaluate only these category ids or names (e.g. the COCO-80 subset of an Objects365 model).
    ``chunk_size``: categories per chunk (None: all at once); results do not depend on it.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    max_dets = tuple(sorted(int(m) for m in max_dets))
    if not max_dets or max_dets[0] < 1:
        raise ValueError("max_dets must be positive integers")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError("chunk_size must be positive or None")
    if not isinstance(gt, GroundTruth):
        gt = load_ground_truth(gt)
    dt = detections if isinstance(detections, Detections) else load_detections(detections, gt)
    cat_ids = (_resolve_categories(categories, gt.category_ids.tolist(), gt.category_names) if categories is not None
               else gt.category_ids.tolist())
    step = chunk_size or len(cat_ids)
    chunks = [np.array(cat_ids[i:i + step], dtype=np.int64) for i in range(0, len(cat_ids), step)]
    if backend == "numpy":
        parts = list(_numpy_chunks(gt, dt, chunks, max_dets))
    else:
        parts = [_library_chunk(backend, gt, dt, chunk, max_dets) for chunk in chunks]
    precision = np.concatenate([p for p, _ in parts], axis=2)
    recall = np.concatenate([r for _, r in parts], axis=1)
    names = dict(zip(gt.category_ids.tolist(), gt.category_names))
    return CocoResult(precision, recall, tuple(cat_ids), tuple(names[c] for c in cat_ids), max_dets)


# ----------------------------------------------------------------------------------------------- numpy backend


def _numpy_chunks(gt: GroundTruth, dt: Detections, chunks: list[np.ndarray],
                  max_dets: tuple[int, ...]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Sort once by (category, image, -score), then evaluate contiguous category chunks."""
    all_ids = np.concatenate(chunks)
    d_keep = np.flatnonzero(np.isin(dt.category, all_ids))
    d_keep = d_keep[np.lexsort((-dt.scores[d_keep], dt.image[d_keep], dt.category[d_keep]))]  # lexsort is stable
    g_keep = np.flatnonzero(np.isin(gt.category, all_ids))
    g_keep = g_keep[np.lexsort((gt.image[g_keep], gt.category[g_keep]))]
    d_cat, g_cat = dt.category[d_keep], gt.category[g_keep]
    for chunk in chunks:  # consecutive runs of the sorted ids: each chunk is a contiguous slice
        d_lo, d_hi = np.searchsorted(d_cat, chunk[0], "left"), np.searchsorted(d_cat, chunk[-1], "right")
        g_lo, g_hi = np.searchsorted(g_cat, chunk[0], "left"), np.searchsorted(g_cat, chunk[-1], "right")
        yield _evaluate_sorted(gt, dt, d_keep[d_lo:d_hi], g_keep[g_lo:g_hi], chunk, max_dets)


def _group_starts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique values, start offsets and counts of runs in a sorted key array."""
    if not len(keys):
        return keys, np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    counts = np.diff(np.r_[starts, len(keys)])
    return keys[starts], starts, counts


def _evaluate_sorted(gt: GroundTruth, dt: Detections, d_rows: np.ndarray, g_rows: np.ndarray, chunk: np.ndarray,
                     max_dets: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Precision/recall for one category chunk; ``d_rows`` sorted by (category, image, -score), ``g_rows`` by
    (category, image) with file order kept inside each (image, category)."""
    n_img = len(gt.image_ids)
    T, R, K, A, M = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(chunk), len(AREA_RANGES), len(max_dets)
    ranges = np.array(list(AREA_RANGES.values()))

    d_key = np.searchsorted(chunk, dt.category[d_rows]) * n_img + dt.image[d_rows]
    d_groups, d_start, d_count = _group_starts(d_key)
    rank = np.arange(len(d_key)) - np.repeat(d_start, d_count)
    kept = rank < max_dets[-1]  # pycocotools keeps the top max_dets[-1] per (image, category)
    d_rows, d_key, rank = d_rows[kept], d_key[kept], rank[kept]
    d_groups, d_start, d_count = _group_starts(d_key)

    g_key = np.searchsorted(chunk, gt.category[g_rows]) * n_img + gt.image[g_rows]
    g_groups, g_start, g_count = _group_starts(g_key)
    g_area = gt.area[g_rows]
    g_ignore = gt.iscrowd[g_rows][None, :] | (g_area[None, :] < ranges[:, :1]) | (g_area[None, :] > ranges[:, 1:])

    matched = np.zeros((A, T, len(d_rows)), dtype=bool)
    ignored = np.zeros((A, T, len(d_rows)), dtype=bool)
    pos = np.searchsorted(g_groups, d_groups)
    has_gt = pos < len(g_groups)
    has_gt[has_gt] = g_groups[pos[has_gt]] == d_groups[has_gt]
    both = np.flatnonzero(has_gt)
    d_box = dt.boxes[d_rows]
    _match(d_box, d_start[both], d_count[both], gt.boxes[g_rows], g_start[pos[both]], g_count[pos[both]],
           g_crowd=gt.iscrowd[g_rows], g_ignore=g_ignore, g_zero_id=gt.ann_ids[g_rows] == 0, matched=matched,
           ignored=ignored)
    d_area = d_box[:, 2] * d_box[:, 3]
    outside = (d_area[None, :] < ranges[:, :1]) | (d_area[None, :] > ranges[:, 1:])  # [A, N]
    ignored |= ~matched & outside[:, None, :]
    tp, fp = matched & ~ignored, ~matched & ~ignored  # [A, T, N]
    del matched, ignored

    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    d_k = d_key // n_img
    g_k = g_key // n_img
    d_bounds = np.searchsorted(d_k, np.arange(K + 1))
    g_bounds = np.searchsorted(g_k, np.arange(K + 1))
    scores = dt.scores[d_rows]
    for k in range(K):
        rows = np.arange(d_bounds[k], d_bounds[k + 1])
        rows = rows[np.argsort(-scores[rows], kind="mergesort")]  # pycocotools' order: score, then image, rank
        npig = np.count_nonzero(~g_ignore[:, g_bounds[k]:g_bounds[k + 1]], axis=1)
        if not npig.any():
            continue
        for m, limit in enumerate(max_dets):
            seq = rows[rank[rows] < limit]
            for a in np.flatnonzero(npig):
                precision[:, :, k, a, m], recall[:, k, a, m] = _pr_curve(tp[a][:, seq], fp[a][:, seq], npig[a])
    return precision, recall


def _pr_curve(tp: np.ndarray, fp: np.ndarray, npig: int) -> tuple[np.ndarray, np.ndarray]:
    """pycocotools' accumulate for one category, area range and max_dets: TP/FP flags [T, nd] of the detections
    in score order (neither: ignored) give interpolated precision [T, R] and recall [T].

    Detections ignored at every threshold are dropped first: they repeat the previous point of the curve, which
    changes neither the envelope nor where recall first reaches a threshold, so the result is unchanged.
    """
    T, R = tp.shape[0], len(RECALL_THRESHOLDS)
    counted = (tp | fp).any(axis=0)
    tp, fp = tp[:, counted], fp[:, counted]
    nd = tp.shape[1]
    q = np.zeros((T, R))
    if not nd:
        return q, np.zeros(T)
    tp_sum = np.cumsum(tp, axis=1, dtype=np.float64)
    fp_sum = np.cumsum(fp, axis=1, dtype=np.float64)
    rc = tp_sum / npig
    pr = np.maximum.accumulate((tp_sum / (fp_sum + tp_sum + np.spacing(1)))[:, ::-1], axis=1)[:, ::-1]
    for t in range(T):
        idx = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
        ok = idx < nd
        q[t, ok] = pr[t, idx[ok]]
    return q, rc[:, -1]


def _match(d_box: np.ndarray, d_start: np.ndarray, d_count: np.ndarray, g_box: np.ndarray, g_start: np.ndarray,
           g_count: np.ndarray, *, g_crowd: np.ndarray, g_ignore: np.ndarray, g_zero_id: np.ndarray,
           matched: np.ndarray, ignored: np.ndarray) -> None:
    """Greedy matching of pycocotools' evaluateImg for (image, category) groups that have both detections and
    ground truth; fills ``matched``/``ignored`` [A, T, N] for their detections.

    Groups are bucketed by ground-truth count (padded to a power of two) and sorted by detection count, so the
    groups still active at detection rank r are a prefix of the bucket.
    """
    thr = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
    pad = 1 << np.ceil(np.log2(np.maximum(g_count, 1))).astype(np.int64)
    for width in np.unique(pad):
        sel = np.flatnonzero(pad == width)
        sel = sel[np.argsort(-d_count[sel], kind="stable")]
        slot = np.arange(width)
        valid = slot[None, :] < g_count[sel, None]
        gidx = np.where(valid, g_start[sel, None] + slot[None, :], 0)
        gb = g_box[gidx]
        gx1, gy1 = gb[..., 0], gb[..., 1]
        gx2, gy2 = gb[..., 2] + gb[..., 0], gb[..., 3] + gb[..., 1]
        ga = gb[..., 2] * gb[..., 3]
        crowd = g_crowd[gidx] & valid
        ign = np.moveaxis(g_ignore[:, gidx], 0, 1)[:, :, None, :]  # [n, A, 1, width]
        zero = g_zero_id[gidx]
        taken = np.zeros((len(sel), g_ignore.shape[0], len(thr), width), dtype=bool)
        active = np.searchsorted(-d_count[sel], -np.arange(d_count[sel[0]]), side="left")  # groups with > r dets
        for r, n in enumerate(active):
            rows = d_start[sel[:n]] + r
            db = d_box[rows]
            dx1, dy1 = db[:, :1], db[:, 1:2]
            dx2, dy2 = db[:, 2:3] + db[:, :1], db[:, 3:4] + db[:, 1:2]
            da = db[:, 2:3] * db[:, 3:4]
            w = np.minimum(dx2, gx2[:n]) - np.maximum(dx1, gx1[:n])
            h = np.minimum(dy2, gy2[:n]) - np.maximum(dy1, gy1[:n])
            overlap = (w > 0) & (h > 0) & valid[:n]
            inter = w * h
            union = np.where(crowd[:n], da, da + ga[:n] - inter)
            with np.errstate(divide="ignore", invalid="ignore"):
                iou = np.where(overlap, inter / union, 0.0)
            cand = overlap[:, None, None, :] & (iou[:, None, None, :] >= thr[None, None, :, None]) & ~taken[:n]
            regular = cand & ~ign[:n]
            pool = np.where(regular.any(axis=-1, keepdims=True), regular, cand)
            hit = pool.any(axis=-1)  # [n, A, T]
            best = (width - 1) - np.argmax(np.where(pool, iou[:, None, None, :], -1.0)[..., ::-1], axis=-1)
            row_i = np.arange(n)[:, None, None]
            a_i = np.arange(ign.shape[1])[None, :, None]
            ignored[:, :, rows] = np.moveaxis(hit & ign[:n][row_i, a_i, 0, best], 0, -1)
            matched[:, :, rows] = np.moveaxis(hit & ~zero[row_i, best], 0, -1)
            claim = hit & ~crowd[row_i, best]
            taken[:n] |= (slot == best[..., None]) & claim[..., None]


# ------------------------------------------------------------------------------------------- library backends


def _library_chunk(backend: str, gt: GroundTruth, dt: Detections, chunk: np.ndarray,
                   max_dets: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Run faster-coco-eval or pycocotools on one category chunk; returns their precision/recall arrays."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    g = np.flatnonzero(np.isin(gt.category, chunk))
    d = np.flatnonzero(np.isin(dt.category, chunk))
    names = dict(zip(gt.category_ids.tolist(), gt.category_names))
    dataset = {
        "images": list(gt.images),
        "categories": [{"id": int(c), "name": names[int(c)]} for c in chunk],
        "annotations": [
            {"id": int(gt.ann_ids[i]), "image_id": int(gt.image_ids[gt.image[i]]), "category_id": int(gt.category[i]),
             "bbox": gt.boxes[i].tolist(), "area": float(gt.area[i]), "iscrowd": int(gt.iscrowd[i])}
            for i in g
        ],
    }
    results = [
        {"image_id": int(gt.image_ids[dt.image[i]]), "category_id": int(dt.category[i]), "bbox": dt.boxes[i].tolist(),
         "score": float(dt.scores[i])}
        for i in d
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:  # pycocotools' loadRes cannot take an empty list
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(gt.images), "categories": dataset["categories"], "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.catIds = chunk.tolist()
        ev.params.maxDets = list(max_dets)
        ev.evaluate()
        ev.accumulate()
    return np.asarray(ev.eval["precision"], dtype=np.float64), np.asarray(ev.eval["recall"], dtype=np.float64)
