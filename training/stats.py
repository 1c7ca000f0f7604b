"""Dataset statistics of a COCO-format detection JSON, as in the Objects365 paper (Shao et al., ICCV 2019).

Table 1 (images, categories, boxes, boxes per image), the distributions of boxes and categories per image, image
resolutions, box sizes (COCO small / medium / large: area < 32², < 96², the rest) and per-category counts with the
long tail, and Fig. 7's "effective annotations": the boxes whose category maps into another label space (COCO-80,
VOC-20) through :func:`zoo.categories.map_indices`, with boxes and categories per image and the annotated area
ratio (area of the UNION of an image's boxes over the image area). Everything is computed from the memory-mapped
:class:`training.data.index.AnnotationIndex`, so the Objects365 train file (10M boxes) fits in a few hundred MiB.

    python -m training stats ANN.json [--images DIR] [--map coco|voc] [--json] [--plots DIR]
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data.index import AnnotationIndex

SMALL, MEDIUM = 32.0**2, 96.0**2  # COCO's area ranges
HIST_CAP = 60  # integer histograms: the last bin counts every value >= HIST_CAP
RATIO_BINS = np.linspace(0.0, 1.0, 21)
LONG_SIDE_EDGES = [0, 320, 480, 640, 800, 1024, 1333, 2048, 4096, 1 << 30]
_UNION_CELLS = 1 << 22  # grid cells per union-area chunk (32 MiB of float64)


def union_areas(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Area of the union of each image's xyxy boxes (image ``i`` owns ``boxes[offsets[i]:offsets[i + 1]]``).

    Exact, by coordinate compression: the 2K x and y edges of an image's K boxes cut it into (2K-1)² cells; a 2-D
    difference array marks the cells each box covers and the covered cells' areas are summed. Images with the same K
    are done together, in chunks of bounded memory.
    """
    counts = np.diff(offsets)
    out = np.zeros(len(counts))
    for k in np.unique(counts[counts > 0]).tolist():
        images = np.flatnonzero(counts == k)
        g = 2 * k
        step = max(1, _UNION_CELLS // (g * g))
        for lo in range(0, len(images), step):
            sel = images[lo:lo + step]
            b = np.asarray(boxes[offsets[sel][:, None] + np.arange(k)], dtype=np.float64)  # [n, K, 4]
            n = len(sel)
            ranks, widths = [], []
            for lo_edge, hi_edge in ((b[..., 0], b[..., 2]), (b[..., 1], b[..., 3])):
                edges = np.concatenate([lo_edge, hi_edge], axis=1)  # [n, 2K]
                order = np.argsort(edges, axis=1, kind="stable")
                rank = np.empty_like(order)
                np.put_along_axis(rank, order, np.arange(g)[None, :], axis=1)
                ranks.append(rank)
                widths.append(np.diff(np.take_along_axis(edges, order, axis=1), axis=1))  # [n, 2K - 1]
            x1, x2 = ranks[0][:, :k], ranks[0][:, k:]
            y1, y2 = ranks[1][:, :k], ranks[1][:, k:]
            base = (np.arange(n) * g * g)[:, None]
            flat = np.concatenate([base + x1 * g + y1, base + x1 * g + y2, base + x2 * g + y1, base + x2 * g + y2],
                                  axis=1).ravel()
            sign = np.tile(np.repeat([1.0, -1.0, -1.0, 1.0], k), n)
            grid = np.bincount(flat, sign, minlength=n * g * g).reshape(n, g, g)
            depth = np.int16 if k < 2**15 else np.int32  # how many boxes cover a cell: at most K
            covered = grid.cumsum(axis=1, dtype=depth).cumsum(axis=2, dtype=depth)[:, :-1, :-1] > 0
            out[sel] = np.einsum("nij,ni,nj->n", covered, widths[0], widths[1])
    return out


def _distinct(keys: np.ndarray) -> np.ndarray:
    """Sorted unique values (a sort is several times faster than ``np.unique``'s hashing at 10M keys)."""
    keys = np.sort(keys)
    return keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if len(keys) else keys


def _summary(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {"mean": 0.0, "median": 0.0, "min": 0.0, "max": 0.0}
    return {"mean": float(values.mean()), "median": float(np.median(values)), "min": float(values.min()),
            "max": float(values.max())}


def _int_histogram(values: np.ndarray) -> list[int]:
    """Images with 0, 1, ..., HIST_CAP - 1 and >= HIST_CAP of something."""
    return np.bincount(np.minimum(values, HIST_CAP), minlength=HIST_CAP + 1).tolist()


def _coverage(index: AnnotationIndex, image_of_box: np.ndarray, keep: np.ndarray | None) -> dict[str, Any]:
    """Boxes per image, categories per image and annotated (union) area ratio of the kept boxes."""
    n_img, n_cat = len(index), len(index.category_names)
    img = image_of_box if keep is None else image_of_box[keep]
    cats = np.asarray(index.categories) if keep is None else np.asarray(index.categories)[keep]
    boxes = index.boxes if keep is None else np.asarray(index.boxes)[keep]
    per_image = np.bincount(img, minlength=n_img)
    offsets = np.zeros(n_img + 1, dtype=np.int64)
    np.cumsum(per_image, out=offsets[1:])
    pairs = _distinct(img * n_cat + cats)
    cats_per_image = np.bincount(pairs // n_cat, minlength=n_img)
    ratio = union_areas(boxes, offsets) / (np.asarray(index.widths, np.float64) * np.asarray(index.heights))
    return {"boxes": int(len(img)), "images_with_boxes": int(np.count_nonzero(per_image)),
            "boxes_per_image": _summary(per_image), "categories_per_image": _summary(cats_per_image),
            "area_ratio": _summary(ratio),
            "histograms": {"boxes_per_image": _int_histogram(per_image),
                           "categories_per_image": _int_histogram(cats_per_image),
                           "area_ratio": np.histogram(ratio, RATIO_BINS)[0].tolist()}}


def mapped_categories(index: AnnotationIndex, target: str) -> list[int]:
    """Positions (in ``index.category_names``) of the categories that map into ``target`` (a category key)."""
    from zoo.categories import find_key, map_indices

    source = find_key(index.category_names) or index.category_names
    return sorted({i for i in map_indices(source, target) if i is not None})


def compute_stats(index: AnnotationIndex, mappings: dict[str, Sequence[int]] | None = None,
                  images_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Every statistic of the module docstring as a JSON-ready dict; ``mappings``: name -> kept category positions
    (see :func:`mapped_categories`) for the effective annotations; ``images_dir``: count listed files missing there."""
    n_img, n_box, n_cat = len(index), index.num_boxes, len(index.category_names)
    per_image = np.diff(np.asarray(index.box_offsets))
    image_of_box = np.repeat(np.arange(n_img), per_image)
    cats = np.asarray(index.categories)
    boxes = np.asarray(index.boxes)
    area = (boxes[:, 2] - boxes[:, 0]).astype(np.float64) * (boxes[:, 3] - boxes[:, 1])
    image_area = np.asarray(index.widths, np.float64) * np.asarray(index.heights)
    rel_size = np.sqrt(area / image_area[image_of_box])
    size_counts = [int(np.count_nonzero(area < SMALL)), int(np.count_nonzero((area >= SMALL) & (area < MEDIUM))),
                   int(np.count_nonzero(area >= MEDIUM))]

    boxes_per_cat = np.bincount(cats, minlength=n_cat)
    images_per_cat = np.bincount(_distinct(image_of_box * n_cat + cats) % n_cat, minlength=n_cat)
    order = np.argsort(-boxes_per_cat, kind="stable")
    share = lambda top: float(boxes_per_cat[order[:top]].sum() / max(n_box, 1))  # noqa: E731
    sizes, size_count = np.unique(np.stack([index.widths, index.heights], axis=1), axis=0, return_counts=True)
    common = np.argsort(-size_count, kind="stable")[:10]
    long_side = np.maximum(index.widths, index.heights)

    coverage = {"all": _coverage(index, image_of_box, None)}
    for name, kept in (mappings or {}).items():
        coverage[name] = {"categories": len(kept),
                          **_coverage(index, image_of_box, np.isin(cats, np.asarray(kept, dtype=cats.dtype)))}
    out: dict[str, Any] = {
        "file": str(index.path),
        "table1": {"images": n_img, "categories": n_cat, "boxes": n_box, "boxes_per_image": n_box / max(n_img, 1)},
        "crowd_boxes": int(np.count_nonzero(index.iscrowd)),
        "dropped_degenerate_boxes": int(index.stats.get("degenerate", 0)),
        "resolution": {"width": _summary(np.asarray(index.widths)), "height": _summary(np.asarray(index.heights)),
                       "megapixels": _summary(image_area / 1e6),
                       "long_side_histogram": {"edges": LONG_SIDE_EDGES,
                                               "images": np.histogram(long_side, LONG_SIDE_EDGES)[0].tolist()},
                       "most_common": [{"width": int(sizes[i, 0]), "height": int(sizes[i, 1]),
                                        "images": int(size_count[i])} for i in common]},
        "box_sizes": {"small": size_counts[0], "medium": size_counts[1], "large": size_counts[2],
                      "fractions": {k: c / max(n_box, 1) for k, c in zip(("small", "medium", "large"), size_counts)},
                      "relative_size": _summary(rel_size),
                      "relative_size_histogram": np.histogram(rel_size, RATIO_BINS)[0].tolist()},
        "long_tail": {"top_10pct_categories_box_share": share(max(1, round(n_cat / 10))),
                      "top_1pct_categories_box_share": share(max(1, round(n_cat / 100))),
                      "boxes_per_category": _summary(boxes_per_cat),
                      "categories_under_100_boxes": int(np.count_nonzero(boxes_per_cat < 100)),
                      "categories_without_boxes": int(np.count_nonzero(boxes_per_cat == 0))},
        "categories": [{"id": index.category_ids[i], "name": index.category_names[i], "boxes": int(boxes_per_cat[i]),
                        "images": int(images_per_cat[i])} for i in order.tolist()],
        "effective": coverage,
    }
    if images_dir is not None:
        missing = [name for name in index.file_names() if not (Path(images_dir) / name).is_file()]
        out["images_dir"] = {"path": str(images_dir), "listed": n_img, "missing": len(missing),
                             "missing_examples": missing[:5]}
    return out


def format_stats(stats: dict[str, Any], top: int = 10) -> str:
    """Terminal tables of :func:`compute_stats`'s result."""
    t, box, tail = stats["table1"], stats["box_sizes"], stats["long_tail"]
    lines = [stats["file"], "",
             f"{'images':>10} {'categories':>10} {'boxes':>12} {'boxes/image':>12}",
             f"{t['images']:>10,} {t['categories']:>10,} {t['boxes']:>12,} {t['boxes_per_image']:>12.2f}",
             f"crowd boxes {stats['crowd_boxes']:,}; degenerate boxes dropped {stats['dropped_degenerate_boxes']:,}",
             "", f"{'box sizes':<10}" + "".join(f"{h:>22}" for h in ("small (< 32²)", "medium (< 96²)", "large")),
             f"{'boxes':<10}" + "".join(f"{box[k]:,} ({100 * box['fractions'][k]:.1f}%)".rjust(22)
                                        for k in ("small", "medium", "large")),
             f"relative size sqrt(box/image area): median {box['relative_size']['median']:.3f}", ""]
    res = stats["resolution"]
    lines.append("resolution  " + "  ".join(f"{k} {res[k]['min']:.0f}/{res[k]['median']:.0f}/{res[k]['max']:.0f}"
                                             for k in ("width", "height")) + " (min/median/max)")
    lines.append("most common sizes  " + ", ".join(f"{s['width']}x{s['height']} ({s['images']:,})"
                                                  for s in res["most_common"][:5]))
    lines += ["", f"long tail: top 10% of categories hold {100 * tail['top_10pct_categories_box_share']:.1f}% of the "
                  f"boxes (top 1%: {100 * tail['top_1pct_categories_box_share']:.1f}%); "
                  f"{tail['categories_under_100_boxes']} categories under 100 boxes, "
                  f"{tail['categories_without_boxes']} without any",
              f"{'category':<32} {'boxes':>10} {'images':>9}"]
    cats = stats["categories"]
    shown = cats if len(cats) <= 2 * top else [*cats[:top], None, *cats[-top:]]
    lines += ["..." if c is None else f"{c['name'][:32]:<32} {c['boxes']:>10,} {c['images']:>9,}" for c in shown]
    lines += ["", "effective annotations (mean / median over all images; area = union of boxes / image area)",
              f"{'label space':<12} {'categories':>10} {'boxes':>12} {'images':>9} {'boxes/img':>13} {'cats/img':>13} "
              f"{'area ratio':>13}"]
    for name, c in stats["effective"].items():
        ncat = c.get("categories", t["categories"])
        lines.append(f"{name:<12} {ncat:>10} {c['boxes']:>12,} {c['images_with_boxes']:>9,} "
                     + " ".join(f"{c[k]['mean']:.2f} / {c[k]['median']:.2f}".rjust(13)
                                for k in ("boxes_per_image", "categories_per_image", "area_ratio")))
    if "images_dir" in stats:
        d = stats["images_dir"]
        lines += ["", f"{d['path']}: {d['missing']:,} of {d['listed']:,} listed images missing"
                  + (f" (e.g. {', '.join(d['missing_examples'])})" if d["missing"] else "")]
    return "\n".join(lines)


def stats_cmd(json_path: str, images: str | None = None, maps: Sequence[str] = (), as_json: bool = False,
              plots: str | None = None) -> str:
    """What ``python -m training stats`` prints."""
    import json

    index = AnnotationIndex.load(json_path)
    stats = compute_stats(index, {m: mapped_categories(index, m) for m in maps}, images)
    if plots:
        from .plots import plot_stats

        stats["figures"] = [str(p) for p in plot_stats(stats, plots)]
    if as_json:
        return json.dumps(stats, indent=2)
    return format_stats(stats) + "".join(f"\nwrote {p}" for p in stats.get("figures", []))
