"""Finetune a zoo model on your own detection data in one call, the way Ultralytics and RF-DETR users expect.

    import training
    result = training.finetune(train="data/train.json", images="data/img", val="data/val.json", epochs=30,
                               name="my_model")
    model = zoo.load("my_model")            # published into the user registry

    python -m training finetune --train data/train.json --images data/img --val data/val.json --epochs 30 \\
        --name my_model

- Data: a COCO JSON (``train`` ends in ``.json``, ``images`` its image folder) or a Pascal VOC folder (``Annotations/``,
  ``JPEGImages/``, ``ImageSets/Main/<split>.txt``: ``trainval`` for training, ``test`` or ``val`` for validation).
  Categories come from the dataset.
- Head transfer: the starting model's class rows are copied for the dataset classes it knows (by name, through the
  category mapping: "person" keeps COCO's person) and the others start fresh; the plan says which.
- Schedule in epochs, printed before training with its iterations and, after the first iterations, an ETA. SGD with
  momentum, linear warmup, cosine decay; ``lr`` defaults to 0.01 for YOLOX (Ultralytics' ``lr0`` for its small
  detectors; Megvii's from-scratch 0.01 per 64 images is too slow for a finetune of a few epochs) and to 0.02 per
  16 images for the R50 detectors (Detectron's).
- Validation every ``eval_every`` epochs (COCO box AP on the val set), keeping the best weights.
- On a CPU, the default starting model is the small ``yolox_nano_coco`` at its 416 px input; a large model on a CPU
  is allowed but the plan warns how slow it is.
- Publishing writes ``<out>/<name>.safetensors`` (weights + spec + categories), a model card, and adds ``name`` to the
  user registry (:func:`zoo.registry.register_weights`) so that ``zoo.load(name)`` and ``zoo serve --model name`` work.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.vocabulary import DETECTION

log = logging.getLogger("training.finetuning")

CPU_DEFAULT = "yolox_nano_coco"
# Seconds per iteration measured on a 2-core CPU at batch 2 (benchmarks/bench_train_throughput.py and this
# module's own runs); used only to warn before a run that would take hours.
_SLOW_ON_CPU = {"fasterrcnn_r50_fpn": 35.0, "retinanet_r50_fpn": 35.0}


@dataclass
class FinetuneResult:
    """What a finetune produced: the run folder, the published weights and name, the best validation figures."""

    run_dir: Path
    name: str
    weights: Path
    iterations: int
    best_epoch: int | None
    best_ap: float | None
    history: list[dict[str, float]]
    mapped: dict[str, str]  # dataset class -> starting model class whose rows it took
    fresh: list[str]  # dataset classes initialised fresh


def finetune(train: str | Path, images: str | Path | None = None, *, init: str | None = None,
             val: str | Path | None = None, val_images: str | Path | None = None, epochs: float = 30,
             batch_size: int | None = None, lr: float | None = None, name: str | None = None,
             out: str | Path | None = None, eval_every: int = 1, device: str | None = None, workers: int = 2,
             seed: int = 0, progress: bool = True, publish: bool = True,
             registry: str | Path | None = None) -> FinetuneResult:
    """Finetune ``init`` (default: :data:`CPU_DEFAULT` on a CPU, else ``fpn_r50_obj365``) on ``train`` for ``epochs``
    and publish it as ``name``; see the module docstring. Returns a :class:`FinetuneResult`."""
    import torch

    import zoo
    from zoo.categories import mapping_table

    from . import distributed
    from .engine import Trainer, seed_everything

    ctx = distributed.setup(device)
    on_cpu = ctx.device.type == "cpu"
    init = init or (CPU_DEFAULT if on_cpu else "fpn_r50_obj365")
    name = name or f"{Path(str(train)).stem}_{init}".replace(".", "_")
    run_dir = Path(out) if out is not None else Path("runs") / name
    init_spec = zoo.api.resolve_spec(str(init))[0]  # a registry name or one of our .safetensors files
    pre = init_spec.preprocessing
    fmt = "coco" if str(train).endswith(".json") else "voc"
    if fmt == "coco" and images is None:
        raise ValueError("a COCO-format train set needs images=<its image folder>")

    train_set = _dataset(fmt, train, images, split="trainval", transforms=_train_transforms(pre))
    names = tuple(train_set.categories)
    if not names:
        raise ValueError(f"{train}: no categories with boxes")
    table = mapping_table(init_spec.categories, list(names))
    mapped = {dst: src for dst, src in table if src is not None}
    fresh = [d for d, s in table if s is None]
    seed_everything(seed)
    model = zoo.load(init, categories=list(names), progress=progress and ctx.is_main)
    arch = zoo.model_spec(model).arch

    batch = min(batch_size or (8 if arch.startswith("yolox") else 2), len(train_set))
    base_lr = 0.01 if arch.startswith("yolox") else 0.02 * batch / 16
    per_epoch = max(1, math.ceil(len(train_set) / (batch * ctx.world_size)))
    total = max(1, math.ceil(epochs * per_epoch))
    recipe = _recipe(arch, init, names, lr=lr or base_lr, global_batch=batch * ctx.world_size, ims_per_gpu=batch,
                     total=total, per_epoch=per_epoch, pre=pre, amp=not on_cpu, workers=workers, seed=seed)
    val_set = None
    if val is not None:
        val_set = _dataset("coco" if str(val).endswith(".json") else "voc", val, val_images or images,
                           split="val", transforms=None, categories=names)
    _announce(init, name, names, mapped=mapped, fresh=fresh, images=len(train_set), epochs=epochs,
              per_epoch=per_epoch, recipe=recipe, arch=arch, on_cpu=on_cpu, has_val=val_set is not None,
              eval_every=eval_every)

    run_dir.mkdir(parents=True, exist_ok=True)
    from . import publish as publishing

    run = {"arch": arch, "task": DETECTION, "categories": list(names), "preprocessing": pre.to_dict(),
           "build_kwargs": dict(zoo.model_spec(model).build_kwargs), "recipe": recipe.to_dict(),
           "world_size": ctx.world_size, "datasets": [Path(str(train)).name]}
    if ctx.is_main:
        publishing.write_text(run_dir / publishing.RUN_INFO, json.dumps(run, indent=2))
    torch.manual_seed(seed + ctx.rank)
    tracker = _Tracker(run_dir, val_set, per_epoch, eval_every, total, ctx)
    trainer = Trainer(model, train_set, recipe, run_dir, ctx, progress=progress, hooks=[tracker])
    result = trainer.fit()
    if result["interrupted"]:
        raise KeyboardInterrupt(f"stopped at iteration {result['iteration']}; call again with the same arguments "
                                f"to resume from {run_dir}")
    if val_set is not None and tracker.best is not None:
        _write_eval_info(run_dir, Path(str(val)).name, tracker)
    weights = (_publish(run_dir, name, tracker.best_state, registry) if ctx.is_main and publish
               else run_dir / f"{name}.safetensors")
    distributed.teardown()
    return FinetuneResult(run_dir, name, weights, result["iteration"], tracker.best_epoch, tracker.best_ap,
                          tracker.history, mapped, fresh)


def _write_eval_info(run_dir: Path, dataset: str, tracker: _Tracker) -> None:
    """The best validation figures beside the run, for the model card."""
    from . import publish as publishing

    publishing.write_text(run_dir / publishing.EVAL_INFO, json.dumps({"stats": tracker.best_stats, "metrics": [
        {"dataset": dataset, "task": DETECTION, "name": "box AP", "value": tracker.best_ap,
         "source": f"objects365-zoo finetune, best of {len(tracker.history)} evaluations (epoch "
                   f"{tracker.best_epoch})"}]}, indent=2))


def _publish(run_dir: Path, name: str, best_state: dict[str, Any] | None, registry: str | Path | None) -> Path:
    """Write the run's weights (the best state when validated) and register them as ``name``; their path."""
    from zoo.registry import register_weights

    from . import publish as publishing

    weights = Path(publishing.export_run(run_dir, name, best=best_state)["weights"])
    register_weights(name, weights, registry=registry)
    log.info("published %s: zoo.load(%r) works from now on (user registry)", weights, name)
    return weights


def _dataset(fmt: str, ann: str | Path, images: str | Path | None, *, split: str, transforms: Callable | None,
             categories: Sequence[str] | None = None):
    from .data import CocoDetection, VocDetection

    if fmt == "coco":
        return CocoDetection(str(ann), str(images), categories=list(categories) if categories else None,
                             on_unknown="skip" if categories else "error", transforms=transforms,
                             skip_empty=split == "trainval")
    root = Path(ann)
    lists = root / "ImageSets" / "Main"
    if split != "trainval":
        split = next((s for s in ("test", "val") if (lists / f"{s}.txt").is_file()), "val")
    elif not (lists / "trainval.txt").is_file() and (lists / "train.txt").is_file():
        split = "train"
    return VocDetection(root, split, categories=list(categories) if categories else None,
                        on_unknown="skip" if categories else "error", transforms=transforms)


def _train_transforms(pre):
    from .transforms import detection_train

    # letterboxing models (YOLOX) resize themselves: fit the photo into the input, flip half of them
    if pre.resize == "letterbox":
        return detection_train((min(pre.input_size()),), max(pre.input_size()), 0.5)
    return detection_train((pre.min_size,), pre.max_size, 0.5)


def _recipe(arch: str, init: str, names: tuple[str, ...], *, lr: float, global_batch: int, ims_per_gpu: int,
            total: int, per_epoch: int, pre, amp: bool, workers: int, seed: int):
    from .recipes import Recipe

    return Recipe(
        name="finetune", arch=arch, init=init, lr=lr, batch_size=global_batch, ims_per_gpu=ims_per_gpu,
        schedule="cosine", max_iter=total, steps=(), warmup_iters=min(300, max(1, total // 5)), warmup_factor=0.01,
        weight_decay=5e-4 if arch.startswith("yolox") else 1e-4, momentum=0.9, clip_grad=10.0,
        min_sizes=(pre.min_size,), max_size=pre.max_size, amp=amp, num_workers=workers, seed=seed,
        checkpoint_period=per_epoch, log_period=max(1, min(20, per_epoch)),
        source=(f"objects365-zoo finetune: SGD momentum 0.9, lr {lr:.4g} at batch {global_batch} (YOLOX: 0.01; R50: "
                "0.02 per 16 images), warmup, cosine decay to 0, epochs over the dataset"),
        extra={"categories": list(names)})


def _announce(init: str, name: str, names: tuple[str, ...], *, mapped: dict[str, str], fresh: list[str], images: int,
              epochs: float, per_epoch: int, recipe, arch: str, on_cpu: bool, has_val: bool, eval_every: int) -> None:
    """The plan, printed before anything trains."""
    lines = [f"finetune {init} -> {name}: {len(names)} classes from the dataset, {images} training images",
             f"  head transfer: {len(mapped)} of {len(names)} classes mapped from {init}"
             + (f" ({', '.join(f'{d}<-{s}' for d, s in list(mapped.items())[:10])}"
                f"{', ...' if len(mapped) > 10 else ''})" if mapped else "")
             + (f"; {len(fresh)} initialised fresh ({', '.join(fresh[:10])}{', ...' if len(fresh) > 10 else ''})"
                if fresh else ""),
             f"  schedule: {epochs:g} epochs x {per_epoch} iterations = {recipe.max_iter} iterations at batch "
             f"{recipe.batch_size}, lr {recipe.lr:.4g} (warmup {recipe.warmup_iters}, cosine), input "
             f"{recipe.min_sizes[0]}x{recipe.max_size}",
             "  validation: " + (f"COCO box AP every {eval_every} epoch(s), best weights kept" if has_val
                                 else "none (pass val=...)")]
    if on_cpu:
        slow = _SLOW_ON_CPU.get(arch)
        if slow:
            lines.append(f"  warning: {arch} runs about {slow:.0f} s per iteration on a 2-core CPU: "
                         f"{recipe.max_iter} iterations is about {recipe.max_iter * slow / 3600:.1f} h; "
                         f"init='{CPU_DEFAULT}' trains in minutes")
        elif init == CPU_DEFAULT:
            lines.append(f"  CPU run: starting from the small {CPU_DEFAULT} at {recipe.min_sizes[0]} px (pass "
                         "init=... for another model)")
    for line in lines:
        print(line, flush=True)


class _Tracker:
    """A Trainer hook: the ETA after the first iterations, validation every ``eval_every`` epochs, best weights."""

    def __init__(self, run_dir: Path, val_set, per_epoch: int, eval_every: int, total: int, ctx) -> None:
        self.run_dir, self.val_set, self.per_epoch = run_dir, val_set, per_epoch
        self.eval_every, self.total, self.ctx = max(1, eval_every), total, ctx
        self.history: list[dict[str, float]] = []
        self.best: float | None = None
        self.best_ap: float | None = None
        self.best_epoch: int | None = None
        self.best_stats: dict[str, float] = {}
        self.best_state: dict[str, Any] | None = None
        self._t0: float | None = None
        self._it0 = 0

    def __call__(self, trainer) -> None:
        it = trainer.iteration
        if self._t0 is None:
            self._t0, self._it0 = time.perf_counter(), it
        elif it - self._it0 == min(3, self.total - self._it0) and self.ctx.is_main:
            per_it = (time.perf_counter() - self._t0) / (it - self._it0)
            eta = per_it * (self.total - it)
            print(f"  ETA: {per_it:.2f} s per iteration, about {_duration(eta)} to go", flush=True)
        if self.val_set is None or not (it % (self.per_epoch * self.eval_every) == 0 or it == self.total):
            return
        epoch = math.ceil(it / self.per_epoch)
        stats = evaluate_dataset(trainer.model, self.val_set, device=self.ctx.device)
        trainer.model.train()
        row = {"epoch": epoch, "iteration": it, **{k: round(v, 5) for k, v in stats.items()}}
        self.history.append(row)
        improved = self.best is None or stats["AP"] > self.best
        if improved:
            self.best, self.best_ap, self.best_epoch, self.best_stats = stats["AP"], stats["AP"], epoch, stats
            self.best_state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        if self.ctx.is_main:
            print(f"  epoch {epoch}: val box AP {stats['AP']:.4f}, AP50 {stats['AP50']:.4f}"
                  f"{' (best so far)' if improved else ''}", flush=True)
            with open(self.run_dir / "val_history.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def evaluate_dataset(model, dataset, *, device="cpu") -> dict[str, float]:
    """COCO box AP of a detector on a training-package dataset (COCO or VOC format, labels already matched to the
    model's categories): the ground truth is built from the dataset's own targets in image pixels."""
    import torch

    from .evaluation.coco import evaluate_coco, results_from_outputs

    model.eval()
    images_meta, outputs, ids = [], [], []
    annotations: list[dict[str, Any]] = []
    for i in range(len(dataset)):
        image, target = dataset[i]
        height, width = image.shape[-2:]
        images_meta.append({"id": i, "width": int(width), "height": int(height)})
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            x1, y1, x2, y2 = box
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(label),
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        with torch.inference_mode():
            outputs.append(model([image.to(device)])[0])
        ids.append(i)
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(dataset.categories)]
    gt = {"images": images_meta, "annotations": annotations, "categories": categories}
    detections = results_from_outputs(ids, outputs, [c["id"] for c in categories])
    return evaluate_coco(gt, detections).stats


__all__ = ["FinetuneResult", "finetune", "evaluate_dataset"]
