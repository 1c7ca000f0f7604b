"""The training loop: the recipe's optimizer and schedule (:mod:`training.optim`), AMP, gradient clipping, DDP, exact
resume.

- AMP: fp16 with a grad scaler on GPU, bf16 autocast on CPU (``recipe.amp``).
- DDP: one process per device under ``torchrun``; global batch = ``ims_per_gpu`` x world size; the sampler hands each
  rank its slice of the same global batch, so N processes follow the single-process trajectory.
- Checkpoints (``last.pt``): every ``checkpoint_period`` iterations, at the end, and when SIGTERM arrives (the loop
  finishes the iteration, saves and returns ``interrupted``). Written atomically with a checksum, the one before kept
  as ``last.previous.pt``; temporaries of a writer killed mid-save are removed at the next start. Resume verifies the
  checksum (falling back to the previous checkpoint with a warning) and restores model, optimizer, scheduler, scaler,
  RNG states of every rank, and the sampler position (a function of the iteration).
- A non-finite loss stops the run with :class:`NonFiniteLossError` before the bad step touches the weights; the last
  checkpoint on disk is the last good one.
- Metrics: ``metrics.jsonl`` and ``metrics.csv`` in the run folder, TensorBoard when installed; tqdm bar with ETA. A
  resume drops the rows after the checkpoint's iteration, which the run logs again: one row per logged iteration.
"""
from __future__ import annotations

import csv
import json
import logging
import signal
import time
from collections.abc import Callable, Iterable, Sequence, Sized
from contextlib import nullcontext
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from zoo.atomic import atomic_write, remove_stale
from zoo.vocabulary import SEGMENTATION

from . import checkpoint as ckpt
from . import distributed as dist_utils
from .distributed import Context
from .optim import build_optimizer, build_scheduler
from .recipes import Recipe
from .sampler import GroupedBatchSampler

log = logging.getLogger(__name__)

CHECKPOINT = "last.pt"


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the run stopped without applying that step."""


def detection_collate(batch: list) -> tuple[list, list]:
    return [b[0] for b in batch], [b[1] for b in batch]


def segmentation_collate(batch: list) -> tuple[torch.Tensor, list]:
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]


class MetricsLog:
    """JSONL + CSV (columns fixed by the first row) + TensorBoard when ``tensorboard`` is installed, appended to from
    ``start_iteration``: rows logged after it by an earlier, killed process (the run resumes from that iteration and
    logs them again) are dropped, in all three."""

    def __init__(self, folder: Path, start_iteration: int = 0) -> None:
        self.jsonl = folder / "metrics.jsonl"
        self.csv = folder / "metrics.csv"
        self.columns: list[str] | None = None
        rows = self._rows_up_to(start_iteration)
        with atomic_write(self.jsonl, "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        if rows:
            self.columns = list(rows[0])
            with atomic_write(self.csv, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(self.columns)
                writer.writerows([row.get(c, "") for c in self.columns] for row in rows)
        else:
            self.csv.unlink(missing_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.tb = None
        else:
            self.tb = SummaryWriter(str(folder / "tensorboard"), purge_step=start_iteration + 1)

    def _rows_up_to(self, iteration: int) -> list[dict]:
        """The complete JSONL rows logged at or before ``iteration`` (a line cut short by a kill is dropped)."""
        if not self.jsonl.is_file():
            return []
        rows = []
        for line in self.jsonl.read_text().splitlines(keepends=True):
            if not line.endswith("\n"):
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row["iteration"] <= iteration:
                rows.append(row)
        return rows

    def write(self, row: dict[str, float]) -> None:
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.columns is None:
            self.columns = list(row)
            with open(self.csv, "w", newline="") as f:
                csv.writer(f).writerow(self.columns)
        with open(self.csv, "a", newline="") as f:
            csv.writer(f).writerow([row.get(c, "") for c in self.columns])
        if self.tb is not None:
            for key, value in row.items():
                if key != "iteration":
                    self.tb.add_scalar(key, value, int(row["iteration"]))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# torchvision's GeneralizedRCNNTransform skips its resize in training when ``_skip_resize`` is set (a constructor
# keyword of the class, read in ``resize``; torchvision's reference scripts use it for large-scale jitter). There is
# no public switch; tests/test_training_engine.py checks that the attribute exists and has that effect.
SKIP_RESIZE_ATTR = "_skip_resize"

Batches = Iterable[list]


def default_train_mode(model: nn.Module) -> None:
    """``model.train()`` through the model's own override (YOLOX keeps its BatchNorm frozen there);
    ``nn.Module.train(model)`` would bypass it and unfreeze the statistics."""
    model.train()


class Trainer:
    """Train ``model`` on ``dataset`` with ``recipe`` in ``out_dir`` (the run folder).

    ``dataset[(index, seed)]`` returns ``(image, target)``; detection models are called ``model(images, targets)``
    and return a dict of losses; segmentation models return ``{"out": logits[, "aux"]}`` and targets carry ``mask``.

    ``hooks`` are called with the trainer after every iteration (checkpoint saved), on every rank. ``train_mode``
    puts the model in training mode (default ``model.train()``; e.g. to keep frozen BatchNorm in eval mode).
    ``batches(start_iteration)`` replaces the grouped sampler: the batches of dataset keys from that iteration on
    (e.g. a dataset whose samples are already a planned random stream, read in order); every process reads what it
    returns, so under DDP it must hand out the process's own share.
    """

    def __init__(self, model: nn.Module, dataset: Dataset, recipe: Recipe, out_dir: str | Path, ctx: Context, *,
                 progress: bool = True, hooks: Sequence[Callable[[Trainer], None]] = (),
                 train_mode: Callable[[nn.Module], object] = default_train_mode,
                 batches: Callable[[int], Batches] | None = None) -> None:
        self.recipe = recipe
        self.dataset = dataset
        self.ctx = ctx
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.hooks = list(hooks)
        self.train_mode = train_mode
        self.batches = batches
        self.iteration = 0
        self._stop_requested = False
        self.segmentation = recipe.task == SEGMENTATION
        self.model, self.net = self._place(model)
        self.optimizer = build_optimizer(self.model, recipe)
        self.scheduler = build_scheduler(self.optimizer, recipe)
        self.use_amp = recipe.amp
        self.amp_dtype = torch.float16 if ctx.device.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda", enabled=recipe.amp and ctx.device.type == "cuda")

    def _place(self, model: nn.Module) -> tuple[nn.Module, nn.Module]:
        """The model on the device (SyncBN, channels-last, no resize of pre-resized batches) and the module the loop
        calls (DDP-wrapped when distributed)."""
        recipe, ctx = self.recipe, self.ctx
        if recipe.sync_bn:
            if ctx.distributed and ctx.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                log.info("sync_bn: kept per-process BatchNorm (SyncBN needs several CUDA processes)")
        model = model.to(ctx.device)
        if recipe.channels_last:
            model = model.to(memory_format=torch.channels_last)
        transform = getattr(model, "transform", None)
        if transform is not None and hasattr(transform, SKIP_RESIZE_ATTR):
            setattr(transform, SKIP_RESIZE_ATTR, True)  # the data pipeline already resized the images
        net = model
        if ctx.distributed:
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)
        return model, net

    def enter_train_mode(self) -> None:
        """Training mode for the loop (again after a hook evaluated the model)."""
        self.net.train()
        self.train_mode(self.model)

    # ------------------------------------------------------------------------------------------------ resume

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT

    def resume(self) -> bool:
        """Restore ``last.pt`` (or, when it does not verify, the one before) if the run folder has one; True when
        something was restored."""
        latest = ckpt.load_latest(self.checkpoint_path)
        if latest is None:
            return False
        state, path = latest
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        rngs = state["rng"]
        if len(rngs) == self.ctx.world_size:
            ckpt.set_rng_state(rngs[self.ctx.rank])
        else:
            log.warning("checkpoint was written by %d processes, now %d: RNG states not restored, the run will "
                        "not be bit-identical", len(rngs), self.ctx.world_size)
        if state.get("recipe") != self.recipe.to_dict():
            changed = sorted(k for k, v in self.recipe.to_dict().items() if (state.get("recipe") or {}).get(k) != v)
            log.warning("resuming with a changed recipe (fields: %s)", ", ".join(changed))
        log.info("resumed from %s at iteration %d", path, self.iteration)
        return True

    def save_checkpoint(self) -> None:
        rngs = dist_utils.gather_objects(ckpt.rng_state())  # collective: every rank takes part
        if self.ctx.is_main:
            ckpt.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                       "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                       "iteration": self.iteration, "rng": rngs, "recipe": self.recipe.to_dict(),
                       "world_size": self.ctx.world_size}, self.checkpoint_path)
        dist_utils.barrier()

    # ------------------------------------------------------------------------------------------------ loop

    def _loader(self) -> DataLoader:
        if self.batches is not None:
            batch_sampler: Batches = self.batches(self.iteration)
        else:
            if not isinstance(self.dataset, Sized):
                raise TypeError(f"the training dataset {type(self.dataset).__name__} has no len(): give the trainer "
                                "a map-style dataset with __len__, or its own batches")
            ratios = self.dataset.aspect_ratios() if hasattr(self.dataset, "aspect_ratios") else None
            batch_sampler = GroupedBatchSampler(ratios, len(self.dataset), self.recipe.ims_per_gpu,
                                                world_size=self.ctx.world_size, rank=self.ctx.rank,
                                                seed=self.recipe.seed, start_iter=self.iteration,
                                                max_iter=self.recipe.max_iter, group=not self.segmentation)
        return DataLoader(self.dataset, batch_sampler=batch_sampler, num_workers=self.recipe.num_workers,
                          collate_fn=segmentation_collate if self.segmentation else detection_collate,
                          pin_memory=self.ctx.device.type == "cuda")

    def _losses(self, images, targets) -> dict[str, torch.Tensor]:
        dev = self.ctx.device
        if self.segmentation:
            images = images.to(dev, non_blocking=True)
            if self.recipe.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            masks = torch.stack([t["mask"] for t in targets]).to(dev, non_blocking=True)
            out = self.net(images)
            losses = {"loss_seg": F.cross_entropy(out["out"].float(), masks, ignore_index=255)}
            if "aux" in out:
                losses["loss_aux"] = self.recipe.aux_weight * F.cross_entropy(out["aux"].float(), masks,
                                                                              ignore_index=255)
            return losses
        images = [im.to(dev, non_blocking=True) for im in images]
        targets = [{k: v.to(dev, non_blocking=True) for k, v in t.items()} for t in targets]
        return self.net(images, targets)

    def _on_sigterm(self, _signum, _frame) -> None:
        log.warning("SIGTERM: finishing this iteration, then saving a checkpoint")
        self._stop_requested = True

    def _forward(self, images, targets) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The loss terms and their sum (under autocast when the recipe asks for AMP)."""
        autocast = torch.autocast(self.ctx.device.type, dtype=self.amp_dtype) if self.use_amp else nullcontext()
        with autocast:
            losses = self._losses(images, targets)
            loss = cast(torch.Tensor, sum(losses.values()))
        return losses, loss

    def _agree(self, losses: dict[str, torch.Tensor], loss: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Loss terms averaged over ranks, and whether any rank was asked to stop; raises
        :class:`NonFiniteLossError` (on every rank) when any rank's loss is not finite."""
        flags = torch.tensor([float(v.detach()) for v in losses.values()]
                             + [float(not torch.isfinite(loss)), float(self._stop_requested)], dtype=torch.float64)
        stop_flags = dist_utils.all_reduce_max(flags[-2:].clone())
        means = dist_utils.all_reduce_mean(flags[:-2].clone())
        if stop_flags[0] > 0:
            where = self.checkpoint_path if self.checkpoint_path.is_file() else "none written yet"
            shown = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
            raise NonFiniteLossError(
                f"loss is not finite at iteration {self.iteration + 1} ({shown}); stopped before the "
                f"update. Last good checkpoint: {where}. Lower the lr or check the data of this batch.")
        return means, bool(stop_flags[1] > 0)

    def _update(self, loss: torch.Tensor) -> float:
        """Backward, clip, optimizer and scheduler step; returns the lr the step used."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.recipe.clip_grad:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.iteration += 1
        return lr

    def fit(self) -> dict:
        """Train to ``recipe.max_iter`` (from the checkpoint if one exists). Returns ``{"iteration",
        "interrupted"}``."""
        r = self.recipe
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.ctx.is_main:
            remove_stale(self.out_dir)
        self.resume()
        log_rows = _RowLog(self, MetricsLog(self.out_dir, self.iteration)) if self.ctx.is_main else None
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        interrupted = False
        self.enter_train_mode()
        try:
            for images, targets in self._loader():
                losses, loss = self._forward(images, targets)
                means, stop = self._agree(losses, loss)
                lr = self._update(loss)
                if log_rows is not None:
                    log_rows.add(lr, list(losses), means)
                if stop:
                    self.save_checkpoint()
                    interrupted = True
                    break
                if self.iteration % r.checkpoint_period == 0 or self.iteration == r.max_iter:
                    self.save_checkpoint()
                for hook in self.hooks:
                    hook(self)
        finally:
            signal.signal(signal.SIGTERM, previous)
            if log_rows is not None:
                log_rows.close()
        return {"iteration": self.iteration, "interrupted": interrupted}


class _RowLog:
    """The main process's view of a run: a metrics row every ``log_period`` iterations (and at the end) and the
    progress bar."""

    def __init__(self, trainer: Trainer, metrics: MetricsLog) -> None:
        self.trainer, self.metrics = trainer, metrics
        self.t_last, self.it_last = time.perf_counter(), trainer.iteration
        self.bar = None
        if trainer.progress:
            from tqdm import tqdm

            r = trainer.recipe
            self.bar = tqdm(total=r.max_iter, initial=trainer.iteration, desc=r.name, dynamic_ncols=True,
                            mininterval=1.0)

    def add(self, lr: float, names: list[str], means: torch.Tensor) -> None:
        it, r = self.trainer.iteration, self.trainer.recipe
        if it % r.log_period == 0 or it == r.max_iter:
            now = time.perf_counter()
            row = {"iteration": it, "lr": lr, "loss": float(means.sum()),
                   **{k: float(v) for k, v in zip(names, means)},
                   "iter_time": (now - self.t_last) / max(1, it - self.it_last)}
            self.t_last, self.it_last = now, it
            self.metrics.write(row)
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{lr:.3g}", refresh=False)
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.metrics.close()


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def loss_of(model: nn.Module, dataset: Dataset, indices: list[int], collate: Callable = detection_collate) -> float:
    """Mean training loss of ``model`` on some samples without updating it (e.g. to compare initialisations)."""
    model.train()
    with torch.no_grad():
        images, targets = collate([dataset[i] for i in indices])
        return float(sum(model(images, targets).values()))


@torch.no_grad()
def predict_coco(model: nn.Module, dataset, device: torch.device | str = "cpu", batch_size: int = 2,
                 num_workers: int = 0) -> dict[str, np.ndarray]:
    """Run a detector over a :class:`~training.data.coco.CocoDetection` set and return COCO results as arrays
    (``image_id``, ``category_id``, ``bbox`` xywh, ``score``); labels with no category in the dataset are dropped."""
    label_to_id = np.full(len(dataset.categories) + 1, -1, dtype=np.int64)
    # CocoDetection._label_of: the label of each annotation-file category (0 or -1 where dropped), which the data
    # module keeps private; tests/test_training_data.py checks its contents.
    for pos, label in enumerate(dataset._label_of.tolist()):
        if label > 0 and label_to_id[label] < 0:
            label_to_id[label] = dataset.index.category_ids[pos]
    model.eval().to(device)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=detection_collate)
    ids, cats, boxes, scores = [], [], [], []
    for images, targets in loader:
        outputs = model([im.to(device) for im in images])
        for out, target in zip(outputs, targets):
            labels = out["labels"].cpu().numpy()
            cat = label_to_id[labels]
            keep = cat >= 0
            b = out["boxes"].float().cpu().numpy()[keep]
            boxes.append(np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1))
            cats.append(cat[keep])
            scores.append(out["scores"].float().cpu().numpy()[keep])
            ids.append(np.full(int(keep.sum()), int(target["image_id"]), dtype=np.int64))
    if not ids:
        return {"image_id": np.zeros(0, np.int64), "category_id": np.zeros(0, np.int64),
                "bbox": np.zeros((0, 4)), "score": np.zeros(0)}
    return {"image_id": np.concatenate(ids), "category_id": np.concatenate(cats), "bbox": np.concatenate(boxes),
            "score": np.concatenate(scores)}
