"""Training recipes as data: each one names the source of its numbers.

Learning rates are given for ``batch_size`` images per iteration (the source's global batch). A run with another
global batch uses :meth:`Recipe.for_batch` (linear scaling, Goyal et al. 2017: lr x k, iterations / k). Epoch-based
sources (MMDetection's 1x) give ``max_epochs``/``step_epochs``, turned into iterations once the dataset size is known.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import typing
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str  # where the numbers come from
    task: str = "detection"  # "detection" | "segmentation"
    arch: str = "fasterrcnn_r50_fpn"
    # data
    dataset_format: str = "coco"  # "coco" | "voc" | "citypersons" | "voc_seg" | "ade20k"
    train_ann: str = ""  # COCO JSON (coco), dataset root (voc, voc_seg, ade20k), gtBbox folder (citypersons)
    train_images: str = ""
    val_ann: str = ""
    val_images: str = ""
    categories: str | None = None  # zoo category key the labels follow; None: the dataset's own names
    on_unknown: str = "error"  # dataset categories with no match in ``categories``: "error" | "skip"
    # initialisation
    init: str | None = None  # zoo model name or local .safetensors; None: build ``arch`` from scratch
    head: str = "transfer"  # "transfer" (class head through the category mapping) | "reinit" (backbone only)
    # optimisation
    lr: float = 0.02
    batch_size: int = 16  # global batch the lr is given for
    optimizer: str = "sgd"  # "sgd" | "adamw" (no decay on biases and norms); see training/optim.py
    momentum: float = 0.9  # SGD only
    weight_decay: float = 1e-4
    schedule: str = "multistep"  # "multistep" | "poly" | "cosine" | "warmup_cosine" (training/optim.py)
    max_iter: int = 90_000
    steps: tuple[int, ...] = (60_000, 80_000)
    gamma: float = 0.1
    poly_power: float = 0.9
    min_lr: float = 0.0
    max_epochs: float | None = None
    step_epochs: tuple[float, ...] = ()
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    clip_grad: float | None = None
    lr_rule: str = "none"  # "none" | "l2norm" (the paper's finetuning rule, lr_rule.py)
    imagenet_weights: str = ""  # ImageNet backbone state dict the l2norm rule compares against
    # input
    min_sizes: tuple[int, ...] = (800,)
    max_size: int = 1333
    flip: float = 0.5
    crop: int = 512
    scale_range: tuple[float, float] = (0.5, 2.0)
    aux_weight: float = 0.4
    # engine
    ims_per_gpu: int = 2  # per-process batch; global batch = ims_per_gpu x world size
    amp: bool = True
    sync_bn: bool = False
    channels_last: bool = False
    seed: int = 0
    num_workers: int = 4
    checkpoint_period: int = 5000
    log_period: int = 20
    imports: tuple[str, ...] = ()  # modules imported first (e.g. to register a custom architecture)
    extra: dict = field(default_factory=dict)

    def override(self, pairs: typing.Iterable[str]) -> Recipe:
        """Apply ``key=value`` strings; values parse as the field's type (tuples: comma-separated or JSON)."""
        hints = typing.get_type_hints(Recipe)
        changes = {}
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            if not sep:
                raise ValueError(f"override {pair!r} is not key=value")
            if key not in hints or key == "name":
                known = ", ".join(f.name for f in dataclasses.fields(Recipe) if f.name != "name")
                raise ValueError(f"unknown recipe field {key!r}; known: {known}")
            changes[key] = _parse(raw, hints[key], key)
        return dataclasses.replace(self, **changes)

    def for_batch(self, global_batch: int) -> Recipe:
        """Linear scaling to ``global_batch``: lr x k; iterations, steps and warmup / k (k = batch / batch_size)."""
        if global_batch == self.batch_size:
            return self
        k = global_batch / self.batch_size
        scaled = dataclasses.replace(
            self, lr=self.lr * k, batch_size=global_batch, max_iter=max(1, round(self.max_iter / k)),
            steps=tuple(max(1, round(s / k)) for s in self.steps), warmup_iters=round(self.warmup_iters / k))
        log.info("linear lr scaling: batch %d -> %d, lr %.5g -> %.5g, %d -> %d iterations", self.batch_size,
                 global_batch, self.lr, scaled.lr, self.max_iter, scaled.max_iter)
        return scaled

    def for_dataset(self, num_images: int) -> Recipe:
        """Resolve ``max_epochs``/``step_epochs`` to iterations at this recipe's batch size."""
        if self.max_epochs is None:
            return self
        per_epoch = num_images / self.batch_size
        return dataclasses.replace(self, max_iter=max(1, math.ceil(self.max_epochs * per_epoch)),
                                   steps=tuple(math.ceil(e * per_epoch) for e in self.step_epochs),
                                   max_epochs=None, step_epochs=())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _parse(raw: str, hint, key: str):
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if raw.lower() in ("none", "null") and type(None) in typing.get_args(hint):
        return None
    try:
        if origin is tuple:
            items = json.loads(raw) if raw.startswith("[") else [s for s in raw.split(",") if s.strip()]
            return tuple(args[0](x) for x in items)
        if origin is dict or hint is dict:
            return json.loads(raw)
        kind = args[0] if args else hint
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind is int:
            return int(float(raw)) if raw.replace("_", "").replace(".", "", 1).isdigit() else int(raw)
        return kind(raw)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise ValueError(f"override {key}={raw!r}: expected {hint}") from None


_O365_1350K = ("Shao et al. 2019 (Objects365), §4.1: lr 0.02 at batch 16, /10 at 900K and 1200K, stop at 1350K, "
               "SyncBN, 800x1333; warmup (1000 iters from 1/1000) and grad clip 35 from MMDetection "
               "configs/objects365/faster-rcnn_r50-syncbn_fpn_1350k_objects365v1.py")
_DETECTRON_1X = ("Detectron configs/12_2017_baselines/e2e_faster_rcnn_R-50-FPN_1x.yaml: lr 0.02 at batch 16 "
                 "(8 GPUs x 2), 90K iterations, /10 at 60K and 80K, 800x1333; linear warmup 500 iters from 1/3 "
                 "(Detectron lib/core/config.py defaults)")

RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe(name="o365_faster_rcnn_1350k", source=_O365_1350K, categories="objects365_v1", lr=0.02, batch_size=16,
           max_iter=1_350_000, steps=(900_000, 1_200_000), warmup_iters=1000, warmup_factor=0.001, clip_grad=35.0,
           sync_bn=True, checkpoint_period=10_000),
    Recipe(name="o365_retinanet_1350k", arch="retinanet_r50_fpn", categories="objects365_v1", lr=0.01,
           batch_size=16, max_iter=1_350_000, steps=(900_000, 1_200_000), warmup_iters=10_000, warmup_factor=0.001,
           clip_grad=35.0, sync_bn=True, checkpoint_period=10_000,
           source="Paper §4.1 schedule (900K/1200K/1350K, SyncBN, 800x1333); RetinaNet lr 0.01 and 10K-iteration "
                  "warmup from MMDetection configs/objects365/retinanet_r50-syncbn_fpn_1350k_objects365v1.py"),
    Recipe(name="mmdet_o365_faster_rcnn_1x", categories="objects365_v1", lr=0.08, batch_size=64, max_epochs=12,
           step_epochs=(8, 11), warmup_iters=1000, warmup_factor=0.001, clip_grad=35.0, ims_per_gpu=4,
           source="MMDetection configs/objects365/faster-rcnn_r50_fpn_16xb4-1x_objects365v1.py: SGD lr 0.08 at "
                  "16x4 images, momentum 0.9, wd 1e-4, grad clip 35, 12 epochs, /10 at epochs 8 and 11, "
                  "1000-iteration linear warmup from 1/1000, resize (1333, 800) keeping ratio, flip 0.5"),
    Recipe(name="coco_faster_rcnn_1x", source=_DETECTRON_1X, categories="coco", lr=0.02, batch_size=16,
           max_iter=90_000, steps=(60_000, 80_000), warmup_iters=500, warmup_factor=1 / 3),
    Recipe(name="coco_faster_rcnn_2x", categories="coco", lr=0.02, batch_size=16, max_iter=180_000,
           steps=(120_000, 160_000), warmup_iters=500, warmup_factor=1 / 3,
           source="Detectron configs/12_2017_baselines/e2e_faster_rcnn_R-50-FPN_2x.yaml: 180K iterations, /10 at "
                  "120K and 160K; otherwise as the 1x"),
    Recipe(name="coco_finetune_paper", categories="coco", init="fpn_r50_obj365", lr=0.02,
           lr_rule="l2norm", gamma=0.2, batch_size=16, max_iter=90_000, steps=(60_000, 80_000), warmup_iters=500,
           warmup_factor=1 / 3,
           source="Shao et al. 2019 §4.3.1, Table 5: finetuning lr = 0.02 x ||W_o365|| / ||W_imagenet|| "
                  "(0.15 x 0.02 = 0.003 in the paper), decayed x1/5 twice; iteration counts and warmup are the "
                  "Detectron 1x schedule (the paper does not restate them)"),
    Recipe(name="voc_faster_rcnn", dataset_format="voc", categories="voc", init="fpn_r50_obj365",
           lr=0.01, batch_size=16, max_epochs=12, step_epochs=(9,), warmup_iters=500, warmup_factor=0.001,
           min_sizes=(600,), max_size=1000,
           source="MMDetection configs/pascal_voc/faster-rcnn_r50_fpn_1x_voc0712.py: lr 0.01 at 8x2, 4 epochs over "
                  "VOC07+12 repeated 3 times (12 effective) with /10 after epoch 3 (9 effective), (1000, 600) "
                  "resize"),
    Recipe(name="citypersons_faster_rcnn", dataset_format="citypersons", categories="citypersons",
           init="fpn_r50_obj365", lr=0.01, batch_size=8, max_epochs=64, step_epochs=(56,),
           warmup_iters=500, warmup_factor=0.001, min_sizes=(800, 832, 864, 896, 928, 960, 992, 1024),
           max_size=2048, ims_per_gpu=1,
           source="MMDetection configs/cityscapes/faster-rcnn_r50_fpn_1x_cityscapes.py: lr 0.01 at 8x1, 8 epochs "
                  "over Cityscapes repeated 8 times (64 effective), /10 after epoch 7 (56 effective), multi-scale "
                  "2048x[800, 1024]"),
    Recipe(name="pspnet_voc", task="segmentation", arch="pspnet_r50", dataset_format="voc_seg", categories="voc",
           lr=0.01, batch_size=16, schedule="poly", poly_power=0.9, min_lr=1e-4, max_iter=20_000, steps=(),
           warmup_iters=0, weight_decay=5e-4, crop=512, scale_range=(0.5, 2.0), ims_per_gpu=4,
           checkpoint_period=2000,
           source="MMSegmentation configs/pspnet/pspnet_r50-d8_4xb4-20k_voc12aug-512x512.py: SGD lr 0.01, "
                  "momentum 0.9, wd 5e-4, poly 0.9 to 1e-4, 20K iterations at 4x4, 512 crops, scale 0.5-2.0, "
                  "auxiliary loss weight 0.4"),
    Recipe(name="pspnet_ade20k", task="segmentation", arch="pspnet_r50", dataset_format="ade20k",
           categories="ade20k", lr=0.01, batch_size=16, schedule="poly", poly_power=0.9, min_lr=1e-4,
           max_iter=80_000, steps=(), warmup_iters=0, weight_decay=5e-4, crop=512, scale_range=(0.5, 2.0),
           ims_per_gpu=4, checkpoint_period=8000,
           source="MMSegmentation configs/pspnet/pspnet_r50-d8_4xb4-80k_ade20k-512x512.py: as the VOC recipe "
                  "with 80K iterations"),
    Recipe(name="detr_finetune", arch="hf_detr", init="rtdetr_r18vd_coco_o365", optimizer="adamw", lr=1e-4,
           batch_size=16, weight_decay=1e-4, max_epochs=72, step_epochs=(), warmup_iters=0, clip_grad=0.1,
           min_sizes=(640,), max_size=640,
           source="RT-DETR (lyuwenyu/RT-DETR rtdetr_pytorch/configs/rtdetr/include/optimizer.yml, commit "
                  "1a2001228d470e816274df9d0c66d1cbe20b761d): AdamW lr 1e-4, betas (0.9, 0.999), weight decay 1e-4 "
                  "(none on biases and norms), grad-norm clip 0.1, 72 epochs with no lr step (milestone 160), "
                  "640 x 640 input; global batch 16 from the RT-DETR paper (Zhao et al. 2023). Not carried over: "
                  "the backbone's lower lr (5e-5) and the weight EMA (0.9999). --init any DETR-family entry "
                  "(dfine_s_obj365, lwdetr_tiny_30e_objects365): the class head is transferred through the mapping"),
)}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}") from None
