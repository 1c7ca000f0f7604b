"""Figures (matplotlib PNG, no display needed) for ``python -m training stats``, ``diagnose`` and ``plot``.

    python -m training plot RUN_DIR [RUN_DIR ...] --out FIG.png
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .diagnose import Diagnosis

# Fig. 8's colours, from C75 to FN.
_CURVE_COLOURS = ("#ffffff", "#3b5ba5", "#5aa05a", "#f0c000", "#c84040", "#87cefa", "#ff8c00")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def plot_stats(stats: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """``dataset_stats.png`` (per-image, size and category distributions) and ``effective_annotations.png``
    (Fig. 7: boxes and categories per image and annotated area ratio, one line per label space)."""
    from .stats import HIST_CAP, LONG_SIDE_EDGES, RATIO_BINS

    plt, out_dir = _pyplot(), Path(out_dir)
    n_img = max(stats["table1"]["images"], 1)
    hist = stats["effective"]["all"]["histograms"]
    fig, ax = plt.subplots(2, 3, figsize=(15, 8))
    for a, key, label in ((ax[0, 0], "boxes_per_image", "boxes per image"),
                          (ax[0, 1], "categories_per_image", "categories per image")):
        a.bar(np.arange(HIST_CAP + 1), 100 * np.asarray(hist[key]) / n_img, width=1.0)
        a.set(xlabel=f"{label} (last bar: >= {HIST_CAP})", ylabel="% of images")
    sizes = stats["resolution"]["long_side_histogram"]
    labels = [f"<{e}" for e in LONG_SIDE_EDGES[1:-1]] + [f">={LONG_SIDE_EDGES[-2]}"]
    ax[0, 2].bar(labels, 100 * np.asarray(sizes["images"]) / n_img)
    ax[0, 2].set(xlabel="image long side (px)", ylabel="% of images")
    ax[0, 2].tick_params(axis="x", rotation=45)
    box = stats["box_sizes"]
    n_box = max(stats["table1"]["boxes"], 1)
    ax[1, 0].bar(RATIO_BINS[:-1], 100 * np.asarray(box["relative_size_histogram"]) / n_box,
                 width=np.diff(RATIO_BINS), align="edge")
    ax[1, 0].set(xlabel="relative box size sqrt(box area / image area)", ylabel="% of boxes",
                 title=" / ".join(f"{k} {100 * v:.1f}%" for k, v in box["fractions"].items()))
    counts = np.array([c["boxes"] for c in stats["categories"]])
    ax[1, 1].plot(np.arange(1, len(counts) + 1), np.maximum(counts, 1))
    ax[1, 1].set(yscale="log", xlabel="category rank", ylabel="boxes",
                 title=f"top 10% of categories: {100 * stats['long_tail']['top_10pct_categories_box_share']:.1f}% "
                       f"of boxes")
    ax[1, 2].plot(np.arange(1, len(counts) + 1), 100 * np.cumsum(counts) / n_box)
    ax[1, 2].set(xlabel="category rank", ylabel="% of boxes (cumulative)", ylim=(0, 100))
    first = _save(fig, out_dir / "dataset_stats.png")

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    for name, cov in stats["effective"].items():
        h = cov["histograms"]
        for a, key in ((ax[0], "boxes_per_image"), (ax[1], "categories_per_image")):
            a.plot(np.arange(HIST_CAP + 1), 100 * np.asarray(h[key]) / n_img, label=name)
        ax[2].plot((RATIO_BINS[:-1] + RATIO_BINS[1:]) / 2, 100 * np.asarray(h["area_ratio"]) / n_img, label=name)
    for a, label in zip(ax, ("boxes per image", "categories per image", "annotated area ratio (union of boxes)")):
        a.set(xlabel=label, ylabel="% of images")
        a.legend()
    return [first, _save(fig, out_dir / "effective_annotations.png")]


def _stacked_pr(ax, precision: np.ndarray, areas: dict[str, float], title: str) -> None:
    """Fig. 8's stacked areas: FN at the back, C75 in front, each labelled with its area under the curve."""
    from .diagnose import CURVES
    from .evaluation.coco import RECALL_THRESHOLDS

    for i in reversed(range(len(CURVES))):
        ax.fill_between(RECALL_THRESHOLDS, precision[i], color=_CURVE_COLOURS[i], edgecolor="black", linewidth=0.5,
                        label=f"[{areas[CURVES[i]]:.3f}] {CURVES[i]}")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], loc="lower left", fontsize=8)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="recall", ylabel="precision", title=title)


def plot_diagnosis(result: Diagnosis, out_dir: str | Path, top: int = 5) -> list[Path]:
    """``diagnose_overall.png`` (mean over categories) and ``diagnose_categories.png`` (the ``top`` categories with
    the largest class-confusion gap Oth - Loc)."""
    from .diagnose import _mean_curve

    plt, out_dir = _pyplot(), Path(out_dir)
    fig, ax = plt.subplots(figsize=(6, 5))
    _stacked_pr(ax, np.stack([_mean_curve(p) for p in result.precision]), result.ap(), "overall-all")
    paths = [_save(fig, out_dir / "diagnose_overall.png")]
    ks = [int(k) for k in np.flatnonzero(result.recall50 > -1)]
    ks = sorted(ks, key=lambda k: result.ap(k)["Oth"] - result.ap(k)["Loc"], reverse=True)[:top]
    if ks:
        fig, axes = plt.subplots(1, len(ks), figsize=(5 * len(ks), 4.5), squeeze=False)
        for a, k in zip(axes[0], ks):
            _stacked_pr(a, result.precision[:, :, k], result.ap(k), result.category_names[k])
        paths.append(_save(fig, out_dir / "diagnose_categories.png"))
    return paths


def read_jsonl(path: Path) -> list[dict]:
    """The complete rows of a JSONL file (none if it is missing; a line cut short by a kill is skipped)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def run_curves(run_dir: str | Path) -> dict[str, dict[str, list[float]]]:
    """``{series: {"iteration": [...], "value": [...]}}`` of a run folder: every ``loss*`` column of
    ``metrics.jsonl`` and AP, AP50 of ``val_history.jsonl``."""
    run_dir = Path(run_dir)
    curves: dict[str, dict[str, list[float]]] = {}
    for source in ("metrics.jsonl", "val_history.jsonl"):
        for row in read_jsonl(run_dir / source):
            for key, value in row.items():
                if (key.startswith("loss") or key in ("AP", "AP50")) and isinstance(value, (int, float)):
                    series = curves.setdefault(key, {"iteration": [], "value": []})
                    series["iteration"].append(row["iteration"])
                    series["value"].append(float(value))
    return curves


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Total loss (left), the loss terms (middle) and validation AP / AP50 (right) against iterations, one colour
    per run."""
    plt = _pyplot()
    fig, ax = plt.subplots(1, 3, figsize=(16, 4.5))
    found = False
    for i, run in enumerate(run_dirs):
        colour, name = f"C{i % 10}", Path(run).name or str(run)
        curves = run_curves(run)
        terms = sorted(k for k in curves if k.startswith("loss_"))
        for key, series in curves.items():
            a = ax[0] if key == "loss" else ax[2] if key.startswith("AP") else ax[1]
            style = ("-", "--", ":", "-.")[terms.index(key) % 4] if key in terms else "--" if key == "AP50" else "-"
            a.plot(series["iteration"], series["value"], color=colour, marker="o" if a is ax[2] else None,
                   linestyle=style, label=f"{name} {key}")
            found = True
    if not found:
        raise FileNotFoundError(f"no metrics.jsonl or val_history.jsonl rows in {', '.join(map(str, run_dirs))}")
    for a, label in zip(ax, ("loss", "loss terms", "validation AP")):
        a.set(xlabel="iteration", ylabel=label)
        if a.lines:
            a.legend(fontsize=7)
    return _save(fig, Path(out))
