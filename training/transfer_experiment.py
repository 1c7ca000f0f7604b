"""The Objects365 paper's transfer experiment (Fig. 1, Tables 11-12) at small scale, on real data.

``yolox_nano_coco`` (COCO-pretrained YOLOX-Nano) is finetuned on the NEON tree crowns (:mod:`training.demo_data`)
three ways, with one schedule, seed and stream of training windows:

- ``backbone+head``: every tensor pretrained. COCO has no "tree", so the single class row of the decoupled head is
  copied (:func:`zoo.convert.transfer_head`) from the COCO class that finds the *training* crowns best before any
  training (:func:`pick_source_class`: the highest mean class probability at the training crowns; the held-out tile
  is not looked at); objectness and box branches are class-agnostic and kept.
- ``backbone``: CSPDarknet and the PAFPN neck (``model.backbone``) pretrained; the whole head (stems, class and box
  convolutions, predictions) initialised fresh, as the builder does.
- ``scratch``: every tensor fresh (the same draw as the ``backbone`` way's head). Its BatchNorm layers train (a fresh
  network has no statistics to freeze); the pretrained ways keep theirs frozen (the shipped weights carry folded
  BatchNorm, see :class:`zoo.models.yolox.YOLOX`).

Training: the demo model's planned random windows (:class:`training.demo.WindowDataset`: native scale with scale
jitter, flips, rotations, colour jitter) on the shared :class:`training.engine.Trainer`, AdamW, linear warmup then
cosine decay over the longest iteration count. Like Fig. 1, each way is one run evaluated along the way at the
requested iteration counts.
Evaluation: the tree model card's protocol: the held-out tile in one pass at native scale (padded to a multiple of
32, never resized), score >= 0.05, up to 1000 detections, COCO AP and AP50 (:func:`training.demo.heldout_ap`).

    python benchmarks/bench_transfer.py --jobs 3     # the table, JSON and plot in benchmarks/results/
"""
from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from zoo.models.yolox import YOLOX, grid_and_strides, yolox_nano

from . import distributed
from .demo import CATEGORIES, CATEGORIES_KEY, Tile, WindowDataset, heldout_ap
from .engine import Trainer
from .recipes import Recipe

INIT = "yolox_nano_coco"
ARCH = "yolox_nano"
WAYS: tuple[str, ...] = ("backbone+head", "backbone", "scratch")
SCORE_THRESHOLD = 0.05
MAX_DETECTIONS = 1000


@dataclass(frozen=True)
class Schedule:
    """One schedule for the three ways; ``checkpoints`` are the iteration counts evaluated (the longest is the run)."""

    checkpoints: tuple[int, ...] = (0, 100, 200, 400, 800)
    batch: int = 4
    window: int = 256
    lr: float = 1e-3
    weight_decay: float = 5e-4
    warmup: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.checkpoints or min(self.checkpoints) < 0:
            raise ValueError(f"checkpoints must be iteration counts >= 0, got {self.checkpoints}")
        if self.window % 32:
            raise ValueError(f"window must be a multiple of 32 (YOLOX's input), got {self.window}")

    @property
    def iterations(self) -> int:
        return max(self.checkpoints)


def build(way: str, state: dict[str, Tensor], source_class: int, seed: int = 0) -> YOLOX:
    """A one-class ("tree") YOLOX-Nano initialised the ``way`` way from the COCO ``state``; fresh tensors are drawn
    from ``seed`` (the same draw for every way) and the global RNG is left as it was."""
    if way not in WAYS:
        raise ValueError(f"way must be one of {', '.join(WAYS)}, got {way!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = yolox_nano(len(CATEGORIES) + 1, frozen_bn=way != "scratch")
    if way == "backbone+head":
        from zoo.convert import transfer_head

        model.load_state_dict(transfer_head(state, ARCH, [source_class]))
    elif way == "backbone":
        missing, unexpected = model.load_state_dict(
            {k: v for k, v in state.items() if k.startswith("backbone.")}, strict=False)
        if unexpected or any(not k.startswith("head.") for k in missing):
            raise ValueError(f"{INIT}'s backbone does not fit {ARCH}: missing {missing[:3]}, extra {unexpected[:3]}")
    return model


def _padded(model: YOLOX, image: Tensor) -> Tensor:
    """``image`` (float [3, H, W] on [0, 1]) on a pad-value canvas whose sides are multiples of 32: letterboxing it
    into a canvas of that size is then the identity (scale 1)."""
    h, w = image.shape[-2:]
    canvas = image.new_full((3, math.ceil(h / 32) * 32, math.ceil(w / 32) * 32), model.transform.pad_value)
    canvas[:, :h, :w] = image
    return canvas


@torch.no_grad()
def predict_native(model: YOLOX, image: Tensor) -> dict[str, Tensor]:
    """Detections on one whole image (float [3, H, W] on [0, 1]) at native scale, score >= 0.05, up to 1000."""
    h, w = image.shape[-2:]
    saved = (model.transform.size, model.score_thresh, model.detections_per_img, model.training)
    canvas = _padded(model, image)
    model.set_input_size(*canvas.shape[-2:])
    model.score_thresh, model.detections_per_img = SCORE_THRESHOLD, MAX_DETECTIONS
    model.eval()
    try:
        out = model([canvas])[0]
    finally:
        model.transform.size, model.score_thresh, model.detections_per_img = saved[:3]
        model.train(saved[3])
    out["boxes"][:, 0::2] = out["boxes"][:, 0::2].clamp(0, w)
    out["boxes"][:, 1::2] = out["boxes"][:, 1::2].clamp(0, h)
    return out


def evaluate(model: YOLOX, tile: Tile) -> dict[str, float]:
    """COCO AP and AP50 on ``tile`` by the tree model card's protocol (see the module docstring)."""
    pred = predict_native(model, tile.image.float().div(255))
    height, width = tile.image.shape[1:]
    return heldout_ap(pred, tile.boxes, (height, width)) | {"detections": int(len(pred["boxes"]))}


@torch.no_grad()
def pick_source_class(model: YOLOX, tiles: Sequence[Tile], names: Sequence[str]) -> tuple[int, dict[str, float]]:
    """The class of the pretrained ``model`` (labels ``names``) that its head already predicts at the crowns of
    ``tiles``, before any training: the highest mean class probability over the output cells (all levels) whose
    centres lie inside a crown box, at native scale; returns its index and every class's mean, highest first.
    (Thresholded zero-shot detections do not rank the classes: every COCO class scored AP50 0 on the training
    tiles.)"""
    model.eval()
    total, cells = torch.zeros(len(names)), 0
    saved = model.transform.size
    try:
        for tile in tiles:
            canvas = _padded(model, tile.image.float().div(255))
            model.set_input_size(*canvas.shape[-2:])
            x, _ = model.transform([canvas])
            raw = model.raw_outputs(x)
            grid, strides = grid_and_strides(x.shape[-2], x.shape[-1], dtype=raw.dtype)
            centres = (grid + 0.5) * strides
            boxes = tile.boxes.to(raw.dtype)
            inside = ((centres[:, None, 0] > boxes[None, :, 0]) & (centres[:, None, 0] < boxes[None, :, 2])
                      & (centres[:, None, 1] > boxes[None, :, 1]) & (centres[:, None, 1] < boxes[None, :, 3])).any(1)
            total += torch.sigmoid(raw[0, inside, 5:]).sum(0)
            cells += int(inside.sum())
    finally:
        model.transform.size = saved
    mean = total / max(1, cells)
    ranked = {names[int(c)]: float(mean[c]) for c in mean.argsort(descending=True)}
    return int(mean.argmax()), ranked


def recipe(schedule: Schedule, way: str) -> Recipe:
    """The shared :class:`~training.engine.Trainer`'s recipe for one way (the same for all three but the name)."""
    return Recipe(
        name=f"transfer_{way}", arch=ARCH, init=None if way == "scratch" else INIT,
        source="training/transfer_experiment.py: the paper's Fig. 1 at small scale on NEON tree crowns",
        lr=schedule.lr, batch_size=schedule.batch, ims_per_gpu=schedule.batch, optimizer="adamw",
        weight_decay=schedule.weight_decay, schedule="warmup_cosine", max_iter=max(1, schedule.iterations), steps=(),
        warmup_iters=schedule.warmup, warmup_factor=0.1, clip_grad=10.0, min_sizes=(schedule.window,),
        max_size=schedule.window, amp=False, seed=schedule.seed, num_workers=0,
        checkpoint_period=max(1, schedule.iterations), log_period=10)


def train_and_evaluate(model: YOLOX, way: str, train_tiles: Sequence[Tile], heldout: Tile, schedule: Schedule,
                       progress: bool = True) -> list[dict]:
    """Train ``model`` for ``schedule.iterations`` (the Trainer, in a temporary run folder) and evaluate it on
    ``heldout`` at each checkpoint; one row per checkpoint: way, iteration, AP, AP50, detections, seconds trained."""
    rows: list[dict] = []
    t0 = time.perf_counter()

    def record(iteration: int) -> None:
        rows.append({"way": way, "iteration": iteration, **evaluate(model, heldout),
                     "train_s": round(time.perf_counter() - t0, 1)})
        if progress:
            print(f"  {way} @ {iteration}: AP {rows[-1]['AP']:.4f}, AP50 {rows[-1]['AP50']:.4f}", flush=True)

    def hook(trainer: Trainer) -> None:
        if trainer.iteration in schedule.checkpoints:
            record(trainer.iteration)
            trainer.enter_train_mode()

    if 0 in schedule.checkpoints:
        record(0)
    if schedule.iterations:
        windows = WindowDataset(list(train_tiles), schedule.iterations * schedule.batch, size=schedule.window,
                                seed=schedule.seed)  # the same planned windows for every way
        model.set_input_size(schedule.window, schedule.window)  # windows at native scale
        with tempfile.TemporaryDirectory(prefix=f"transfer_{way.replace('+', '_')}_") as run_dir:
            trainer = Trainer(model, windows, recipe(schedule, way), run_dir, distributed.setup("cpu"),
                              progress=progress, hooks=[hook], batches=windows.batches(schedule.batch))
            if trainer.fit()["interrupted"]:
                raise KeyboardInterrupt(f"{way}: stopped at iteration {trainer.iteration}")
    model.eval()
    return rows


def _train_way(way: str, state: dict[str, Tensor], source: int, train_tiles: Sequence[Tile], heldout: Tile,
               schedule: Schedule, *, progress: bool, threads: int | None) -> tuple[list[dict], dict[str, Tensor]]:
    """One way from start to end (also in a worker process): its rows and trained weights."""
    if threads is not None:
        torch.set_num_threads(threads)
    model = build(way, state, source, seed=schedule.seed)
    rows = train_and_evaluate(model, way, train_tiles, heldout, schedule, progress)
    return rows, model.state_dict()


def run(train_tiles: Sequence[Tile], heldout: Tile, schedule: Schedule = Schedule(), *,
        ways: Sequence[str] = WAYS, jobs: int = 1, progress: bool = True) -> tuple[dict, dict[str, YOLOX]]:
    """The experiment: ``(result, trained models by way)``; ``result`` holds the schedule, the chosen class row and
    the class ranking, and one row per way and checkpoint. ``jobs > 1`` trains the ways in that many worker
    processes at one thread each (each way keeps its seed and windows; only the thread count differs)."""
    import zoo

    coco = zoo.load(INIT, progress=False)
    if not isinstance(coco, YOLOX):
        raise TypeError(f"{INIT} loads as {type(coco).__name__}, not the YOLOX this experiment fine-tunes")
    names = zoo.model_categories(coco)
    state = coco.state_dict()
    source, ranking = pick_source_class(coco, train_tiles, names)
    args = [(way, state, source, list(train_tiles), heldout, schedule) for way in ways]
    if jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_train_way, *a, progress=progress, threads=1) for a in args]
            done = [f.result() for f in futures]
    else:
        done = [_train_way(*a, progress=progress, threads=None) for a in args]
    rows, models = [], {}
    for way, (way_rows, weights) in zip(ways, done):
        rows += way_rows
        models[way] = build(way, state, source, seed=schedule.seed)
        models[way].load_state_dict(weights)
        models[way].eval()
    result = {"init": INIT, "schedule": asdict(schedule), "source_class": names[source],
              "class_probability_at_train_crowns": {k: round(v, 4) for k, v in list(ranking.items())[:5]},
              "train_tiles": {t.name: len(t.boxes) for t in train_tiles},
              "heldout": {heldout.name: len(heldout.boxes)}, "rows": rows}
    return result, models


def plot_curves(rows: Sequence[dict], out: str | Path, reference: tuple[str, float] | None = None) -> Path:
    """Fig. 1's shape: AP (solid) and AP50 (dashed) against iterations, one colour per way; ``reference`` draws a
    labelled horizontal AP50 line (e.g. the shipped tree model)."""
    from .plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, way in enumerate(dict.fromkeys(r["way"] for r in rows)):
        mine = [r for r in rows if r["way"] == way]
        its = [r["iteration"] for r in mine]
        ax.plot(its, [r["AP"] for r in mine], "-o", color=f"C{k}", label=f"{way} AP")
        ax.plot(its, [r["AP50"] for r in mine], "--s", color=f"C{k}", label=f"{way} AP50")
    if reference is not None:
        ax.axhline(reference[1], color="grey", linestyle=":", label=f"{reference[0]} AP50")
    ax.set(xlabel="training iterations", ylabel="held-out AP / AP50", ylim=(0, None),
           title=f"Transfer from {INIT} to NEON tree crowns")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, Path(out))


def save_weights(model: YOLOX, out: str | Path, name: str, facts: dict) -> Path:
    """The trained one-class model as our safetensors (fp32, spec and categories in the metadata, ``facts`` as the
    run report), written atomically."""
    from zoo import checkpoint
    from zoo.preprocess import YOLOX_416

    spec = {"name": name, "arch": ARCH, "num_classes": len(CATEGORIES) + 1, "categories": CATEGORIES_KEY,
            "preprocessing": YOLOX_416.to_dict()}
    return checkpoint.save_weights(model.state_dict(), out, {"arch": ARCH, "categories": list(CATEGORIES),
                                                             "model": name, "spec": spec, "run": facts})


__all__ = ["INIT", "WAYS", "Schedule", "build", "evaluate", "pick_source_class", "plot_curves", "predict_native", "run",
           "recipe", "save_weights", "train_and_evaluate"]
