"""Post-training int8 of ONNX exports, and its accuracy report.

Two tools write an int8 QDQ ``model.onnx`` that ONNX Runtime and OpenVINO both run:

- ``nncf`` (default): NNCF's ``quantize`` on the ONNX model, mixed preset (symmetric per-channel int8 weights,
  asymmetric activations where they go negative), fast bias correction, quantizers placed where OpenVINO's int8
  kernels (VNNI) use them; with a labelled set, ``quantize_with_accuracy_control`` returns layers to float until
  the AP drop is within the limit.
- ``onnxruntime``: ``quantize_static``, per-channel int8 weights, uint8 activations, MinMax.

Both calibrate on letterboxed photos with the export's pad value and keep in float the prediction layers (weighted
layers with none after them) and everything after them or after a selection (``TopK``, ``NonMaxSuppression``: box
decoding, thresholds, NMS, a second stage). Every int8 export carries an accuracy report against its fp32 export:
agreement on the calibration photos (matched boxes at IoU 0.9 with the same class, score deltas, recall) and COCO
AP/AP50 on a labelled set when one is given (for the tree model, its held-out NEON tile); an AP drop beyond
``max_ap_drop`` points refuses the artefact.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import onnx

from zoo.letterbox import boxes_to_photo, letterbox

from .artifact import METADATA_FILE, ExportError, input_size, pad_value, read_metadata, staged_dir, write_json
from .parity import SKIMAGE_PHOTOS, ParityReport, Tolerance, compare_detections, sample_photos
from .runtime import OnnxRunner, Runner

MIN_CALIBRATION_IMAGES = 8
METHODS = ("nncf", "onnxruntime")
WEIGHTED_OPS = ("Conv", "MatMul", "Gemm")
QUANTIZED_OPS = (*WEIGHTED_OPS, "Mul", "Sigmoid", "Add", "Concat", "MaxPool", "Resize")
SELECTION_OPS = ("TopK", "NonMaxSuppression")
DATA_MOVEMENT_OPS = ("Slice", "SpaceToDepth", "DepthToSpace", "Gather", "Transpose", "Reshape")
FLOAT_NODES = ("prediction layers and all after them, and all after TopK/NonMaxSuppression but the weighted layers "
               "that feed others")
AGREEMENT = Tolerance(box_px=float("inf"), score=0.05, match_iou=0.9)  # matching rule of the int8 agreement
EVERYDAY_PHOTOS = (*SKIMAGE_PHOTOS, "cat", "camera", "page")
SERVING_SAMPLES = Path(__file__).resolve().parent.parent / "serving" / "static" / "samples"
TREE_MODEL = "retinanet_lite0_neon_trees"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class QuantizationError(ExportError):
    """The int8 export was refused (calibration set, or accuracy beyond the allowed drop); nothing was written."""


@dataclass
class LabelledImage:
    name: str
    image: Image.Image
    boxes: np.ndarray  # [N, 4] xyxy, photo pixels
    labels: np.ndarray  # [N] model labels


def windows(image: Image.Image, side: tuple[int, int]) -> Iterator[tuple[int, int, Image.Image]]:
    """``(x, y, crop)`` tiling ``image`` with ``side = (H, W)`` crops, the last row and column flush with its edge."""
    height, width = side

    def starts(total: int, step: int) -> list[int]:
        return sorted({min(s, max(0, total - step)) for s in range(0, max(1, total), step)})

    for y in starts(image.height, height):
        for x in starts(image.width, width):
            yield x, y, image.crop((x, y, x + width, y + height))


def _tree_tiles() -> tuple[list[Image.Image], LabelledImage]:
    from training.data.voc import read_voc_xml
    from training.demo_data import HELDOUT_TILE, TRAIN_TILES, ensure_demo_data

    data = ensure_demo_data()
    train = [Image.open(data.image(stem)).convert("RGB") for stem in TRAIN_TILES]
    ann = read_voc_xml(data.annotation(HELDOUT_TILE))
    heldout = LabelledImage(HELDOUT_TILE, Image.open(data.image(HELDOUT_TILE)).convert("RGB"),
                            np.asarray(ann.boxes, dtype=np.float32), np.ones(len(ann.boxes), dtype=np.int64))
    return train, heldout


def default_calibration(model: str, size: tuple[int, int]) -> dict[str, Image.Image]:
    """The packaged calibration photos: the NEON training tiles cut into export-size windows for the tree model,
    else scikit-image's sample photos and ``serving/static/samples/*.jpg``."""
    if model == TREE_MODEL:
        train, _ = _tree_tiles()
        return {f"train{i}@{x},{y}": crop for i, tile in enumerate(train) for x, y, crop in windows(tile, size)}
    photos = {f"skimage:{name}": image for name, image in sample_photos(EVERYDAY_PHOTOS).items()}
    return photos | read_images(sorted(SERVING_SAMPLES.glob("*.jpg")))


def read_images(paths: list[Path]) -> dict[str, Image.Image]:
    """Decoded RGB images by file name; an unreadable one raises :class:`QuantizationError` naming it."""
    photos = {}
    for path in paths:
        try:
            with Image.open(path) as image:
                photos[path.name] = image.convert("RGB")
        except (OSError, ValueError) as exc:
            raise QuantizationError(f"calibration image {path} is unreadable: {exc}") from None
    return photos


def calibration_photos(spec: str | Path | None, model: str, size: tuple[int, int]) -> dict[str, Image.Image]:
    """Calibration photos from a folder of images, a COCO JSON (its images, relative to the JSON's folder), or
    (None) :func:`default_calibration`; fewer than :data:`MIN_CALIBRATION_IMAGES` is refused."""
    if spec is None:
        photos = default_calibration(model, size)
    else:
        path = Path(spec)
        if path.is_dir():
            photos = read_images(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            photos = read_images([path.parent / img["file_name"] for img in _read_coco(path)["images"]])
        else:
            raise QuantizationError(f"calibration set {path} is neither a folder of images nor a COCO JSON file")
    if len(photos) < MIN_CALIBRATION_IMAGES:
        raise QuantizationError(f"calibration set {spec or 'default'} has {len(photos)} images; int8 calibration "
                                f"needs at least {MIN_CALIBRATION_IMAGES}")
    return photos


def _read_coco(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        if not isinstance(data.get("images"), list):
            raise ValueError("no 'images' list")
        return data
    except (OSError, ValueError, AttributeError) as exc:
        raise QuantizationError(f"{path} is not a readable COCO JSON file: {exc}") from None


def coco_labelled(ann: Path, images: Path, categories: tuple[str, ...], label_offset: int) -> list[LabelledImage]:
    """A COCO detection set as :class:`LabelledImage` s, its categories mapped to the model's labels by name."""
    data = _read_coco(ann)
    names = {c["id"]: c["name"] for c in data.get("categories", [])}
    label_of = {name: i + label_offset for i, name in enumerate(categories)}
    missing = sorted({names.get(a["category_id"], str(a["category_id"])) for a in data.get("annotations", [])}
                     - set(label_of))
    if missing:
        raise QuantizationError(f"{ann}: categories not among the model's: {', '.join(missing[:5])}")
    by_image: dict[int, list[dict]] = {}
    for a in data.get("annotations", []):
        if not a.get("iscrowd"):
            by_image.setdefault(a["image_id"], []).append(a)
    out = []
    for img in data["images"]:
        anns = by_image.get(img["id"], [])
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=np.float32)
        labels = np.array([label_of[names[a["category_id"]]] for a in anns], dtype=np.int64)
        photo = read_images([images / img["file_name"]])
        out.append(LabelledImage(img["file_name"], next(iter(photo.values())), boxes.reshape(-1, 4), labels))
    return out


def heldout_windows(size: tuple[int, int]) -> list[LabelledImage]:
    """The tree model's held-out NEON tile cut into export-size windows at native scale; a crown belongs to the
    window holding at least half of its box (clipped to it)."""
    _, tile = _tree_tiles()
    out = []
    for x, y, crop in windows(tile.image, size):
        shifted = tile.boxes - np.array([x, y, x, y], dtype=np.float32)
        clipped = shifted.copy()
        clipped[:, 0::2] = clipped[:, 0::2].clip(0, crop.width)
        clipped[:, 1::2] = clipped[:, 1::2].clip(0, crop.height)

        def area(b: np.ndarray) -> np.ndarray:
            return (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)

        keep = area(clipped) >= 0.5 * area(shifted)
        out.append(LabelledImage(f"{tile.name}@{x},{y}", crop, clipped[keep], tile.labels[keep]))
    return out


def detect(runner: Runner, photos: list[Image.Image], size: tuple[int, int], pad: float,
           batch: int = 8) -> list[dict[str, np.ndarray]]:
    """Detections per photo, in the photo's pixels."""
    results = []
    for start in range(0, len(photos), batch):
        chunk = photos[start:start + batch]
        boxed = [letterbox(p, size, pad) for p in chunk]
        out = runner(np.stack([array for array, _ in boxed]))
        for b, (photo, (_, scale)) in enumerate(zip(chunk, boxed)):
            n = int(out["num_detections"][b])
            results.append({"boxes": boxes_to_photo(out["boxes"][b, :n], scale, (photo.height, photo.width)),
                            "scores": out["scores"][b, :n], "labels": out["labels"][b, :n]})
    return results


def coco_ap(items: list[LabelledImage], detections: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """COCO box AP and AP50 (pycocotools, maxDets 1000)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b: np.ndarray) -> list[float]:
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]

    labels = sorted({int(v) for it in items for v in it.labels} | {int(v) for d in detections for v in d["labels"]})
    annotations = [{"image_id": i, "category_id": int(lab), "bbox": xywh(box), "iscrowd": 0,
                    "area": float((box[2] - box[0]) * (box[3] - box[1]))}
                   for i, it in enumerate(items) for box, lab in zip(it.boxes, it.labels)]
    gt = {"images": [{"id": i, "height": it.image.height, "width": it.image.width} for i, it in enumerate(items)],
          "categories": [{"id": c} for c in labels],
          "annotations": [{"id": k + 1, **a} for k, a in enumerate(annotations)]}
    dets = [{"image_id": i, "category_id": int(lab), "bbox": xywh(box), "score": float(score)}
            for i, d in enumerate(detections) for box, score, lab in zip(d["boxes"], d["scores"], d["labels"])]
    if not dets:
        return {"AP": 0.0, "AP50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = gt
        truth.createIndex()
        ev = COCOeval(truth, truth.loadRes(dets), "bbox")
        ev.params.maxDets = [10, 100, 1000]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"AP": float(ev.stats[0]), "AP50": float(ev.stats[1])}


def agreement(reference: list[dict[str, np.ndarray]], int8: list[dict[str, np.ndarray]], names: list[str],
              score_threshold: float, max_detections: int) -> dict:
    """int8 against fp32 per photo (:func:`export.parity.compare_detections` at IoU 0.9, same class) and overall:
    recall of the fp32 detections, largest and mean score difference of matched pairs."""
    per_image = [{"image": name, **compare_detections(ref, out, score_threshold=score_threshold,
                                                      max_detections=max_detections, tol=AGREEMENT)}
                 for name, ref, out in zip(names, reference, int8)]
    required = sum(img["required"] for img in per_image)
    matched = sum(img["recall"] * img["required"] for img in per_image)
    return {"match_iou": AGREEMENT.match_iou, "recall": matched / required if required else 1.0,
            "fp32_detections": sum(img["eager_detections"] for img in per_image),
            "int8_detections": sum(img["export_detections"] for img in per_image),
            "max_score_diff": max(img["max_score_diff"] for img in per_image),
            "max_box_diff_px": max(img["max_box_diff_px"] for img in per_image), "images": per_image}


def _consumers(nodes: Iterable[onnx.NodeProto]) -> dict[str, list[onnx.NodeProto]]:
    """The nodes reading each tensor, by tensor name."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def postprocessing_nodes(path: Path) -> list[str]:
    """Names of the nodes kept in float: the prediction layers and every node downstream of them, and every node
    downstream of a selection op but the weighted layers there that feed others (a two-stage detector's box head
    on the pooled proposals is int8; its box and class predictors, the boxes and the scores stay float)."""
    import onnx

    nodes = onnx.load(str(path), load_external_data=False).graph.node
    consumers = _consumers(nodes)

    def downstream(node) -> dict[str, str]:
        seen: dict[str, str] = {}
        stack = list(node.output)
        while stack:
            for consumer in consumers.get(stack.pop(), []):
                if consumer.name not in seen:
                    seen[consumer.name] = consumer.op_type
                    stack.extend(consumer.output)
        return seen

    below = {node.name: downstream(node) for node in nodes if node.op_type in WEIGHTED_OPS}
    heads = [name for name, after in below.items() if not set(after.values()) & set(WEIGHTED_OPS)]
    selected = set().union(*(downstream(node) for node in nodes if node.op_type in SELECTION_OPS))
    inner = set(below) - set(heads)
    return sorted(set(heads).union(*(below[name] for name in heads), selected - inner))


class PhotoReader:
    """ONNX Runtime's ``CalibrationDataReader`` over letterboxed photos, one image per batch."""

    def __init__(self, photos: list[Image.Image], size: tuple[int, int], pad: float) -> None:
        self.arrays = iter([letterbox(p, size, pad)[0][None] for p in photos])

    def get_next(self) -> dict[str, np.ndarray] | None:
        array = next(self.arrays, None)
        return None if array is None else {"images": array}


def quantize_onnxruntime(fp32: Path, out: Path, photos: list[Image.Image], size: tuple[int, int], pad: float) -> dict:
    """Write ONNX Runtime's int8 QDQ model of ``fp32`` to ``out``; returns the settings (for the metadata)."""
    import onnxruntime
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    reader = type("Reader", (PhotoReader, CalibrationDataReader), {})(photos, size, pad)
    source, target = str(fp32.resolve()), str(out.resolve())  # before the chdir: relative paths name the caller's
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):  # the calibrator's augmented model
        quantize_static(source, target, reader, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=postprocessing_nodes(fp32),
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    return {"tool": f"onnxruntime {onnxruntime.__version__} quantize_static", "format": "QDQ",
            "weights": "int8 per channel", "activations": "uint8 per tensor", "calibration_method": "MinMax",
            "quantized_ops": list(QUANTIZED_OPS), "float_nodes": FLOAT_NODES, "calibration_images": len(photos)}


def unsigned_activations(model: onnx.ModelProto) -> None:
    """Re-express signed asymmetric activation quantizers (int8 with a zero point, NNCF's choice for tensors that go
    negative) as uint8 with the zero point moved by 128: the same grid of values. OpenVINO (2026.4) computes wrong
    answers from the signed form (YOLOX-Nano found no box) and the right ones from this; ONNX Runtime reads both."""
    import onnx
    from onnx import numpy_helper

    signed = {tensor.name: tensor for tensor in model.graph.initializer if tensor.data_type == onnx.TensorProto.INT8}
    quantizers = [node for node in model.graph.node if node.op_type == "QuantizeLinear" and len(node.input) > 2
                  and node.input[2] in signed]
    for name in {node.input[2] for node in quantizers}:
        shifted = numpy_helper.to_array(signed[name]).astype(np.int16) + 128
        signed[name].CopyFrom(numpy_helper.from_array(shifted.astype(np.uint8), name))
    outputs = {node.output[0] for node in quantizers}
    for info in model.graph.value_info:
        if info.name in outputs:
            info.type.tensor_type.elem_type = onnx.TensorProto.UINT8


def quantizers_next_to_weights(model: onnx.ModelProto) -> None:
    """Move each activation quantizer (QuantizeLinear + DequantizeLinear, per tensor) that feeds a weighted layer only
    through a chain of data-movement ops (YOLOX's Focus: Slice, SpaceToDepth, Gather) to that layer's input: the same
    values (moving or gathering elements commutes with quantizing each one), and OpenVINO then runs the layer in
    int8 instead of float (it does not carry a quantizer through SpaceToDepth and Gather)."""
    from onnx import helper

    nodes = list(model.graph.node)
    consumers = _consumers(nodes)
    producers = {name: node for node in nodes for name in node.output}
    graph_outputs, removed = {output.name for output in model.graph.output}, set()
    for dq in [node for node in nodes if node.op_type == "DequantizeLinear"]:
        producer = producers.get(dq.input[0])
        if producer is None or producer.op_type != "QuantizeLinear" or len(producer.input) < 2:
            continue
        chain, tensor = [], dq.output[0]
        while len(consumers.get(tensor, [])) == 1 and tensor not in graph_outputs:
            node = consumers[tensor][0]
            if node.op_type not in DATA_MOVEMENT_OPS or node.input[0] != tensor:
                break
            chain.append(node)
            tensor = node.output[0]
        readers = consumers.get(tensor, [])
        if not chain or len(readers) != 1 or len(consumers.get(dq.input[0], [])) != 1:
            continue
        layer = readers[0]
        if layer.op_type not in WEIGHTED_OPS or layer.input[0] != tensor:
            continue
        chain[0].input[0] = producer.input[0]  # the chain now moves float values
        moved = f"{tensor}_quantized"
        quantize = helper.make_node("QuantizeLinear", [tensor, *producer.input[1:]], [f"{moved}_q"],
                                    name=f"{producer.name}_moved")
        dequantize = helper.make_node("DequantizeLinear", [f"{moved}_q", *dq.input[1:]], [moved],
                                      name=f"{dq.name}_moved")
        layer.input[0] = moved
        model.graph.node.remove(producer)
        model.graph.node.remove(dq)
        at = list(model.graph.node).index(layer)
        model.graph.node.insert(at, dequantize)
        model.graph.node.insert(at, quantize)
        removed.update(producer.output)
    kept = [info for info in model.graph.value_info if info.name not in removed]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)


def quantize_nncf(fp32: Path, out: Path, photos: list[Image.Image], size: tuple[int, int], pad: float, *,
                  labelled: list[LabelledImage] | None = None, max_ap_drop: float = 1.0) -> dict:
    """Write NNCF's int8 QDQ model of ``fp32`` to ``out`` (accuracy-aware with ``labelled``: at most
    ``max_ap_drop`` AP points on it); returns the settings (for the metadata)."""
    import nncf
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    nncf.set_log_level(logging.WARNING)  # not a line per quantizer placed
    with tempfile.TemporaryDirectory() as scratch:  # constants folded into initializers, which NNCF's graph needs
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        model, floats = onnx.load(str(prepared)), postprocessing_nodes(prepared)
    calibration = nncf.Dataset([letterbox(p, size, pad)[0][None] for p in photos], lambda array: {"images": array})
    settings = {"preset": nncf.QuantizationPreset.MIXED, "subset_size": len(photos),
                "ignored_scope": nncf.IgnoredScope(names=floats, validate=False)}
    if labelled:
        def validate(candidate: onnx.ModelProto, items: list[LabelledImage]) -> float:
            items = list(items)
            runner = OnnxRunner(candidate.SerializeToString())
            return coco_ap(items, detect(runner, [item.image for item in items], size, pad))["AP"]

        quantized = nncf.quantize_with_accuracy_control(model, calibration, nncf.Dataset(labelled), validate,
                                                        max_drop=max_ap_drop / 100, **settings)
        tool = "quantize_with_accuracy_control"
    else:
        quantized = nncf.quantize(model, calibration, **settings)
        tool = "quantize"
    quantizers_next_to_weights(quantized)
    unsigned_activations(quantized)
    onnx.save(quantized, str(out))
    return {"tool": f"nncf {nncf.__version__} {tool} (ONNX backend)", "format": "QDQ", "preset": "mixed",
            "weights": "int8 per channel, symmetric", "activations": "int8 per tensor, asymmetric where negative",
            "bias_correction": "fast", "float_nodes": FLOAT_NODES, "calibration_images": len(photos),
            **({"accuracy_control": {"labelled_images": len(labelled), "max_drop_ap_points": max_ap_drop}}
               if labelled else {})}


@dataclass(frozen=True)
class Reference:
    """The fp32 export's answers that every comparison is made against: its detections on the calibration photos
    and, with a labelled set, its AP/AP50 there (computed once, whatever the number of candidates)."""

    detections: list[dict[str, np.ndarray]]
    ap: dict[str, float] | None


def fp32_reference(fp32: Runner, meta: dict, photos: dict[str, Image.Image],
                   labelled: list[LabelledImage] | None) -> Reference:
    """Run the fp32 export once on ``photos`` (and ``labelled``) for :func:`accuracy_report`."""
    size, pad = input_size(meta), pad_value(meta)
    ap = coco_ap(labelled, detect(fp32, [item.image for item in labelled], size, pad)) if labelled else None
    return Reference(detect(fp32, list(photos.values()), size, pad), ap)


def accuracy_report(fp32: Reference, other: Runner, meta: dict, photos: dict[str, Image.Image],
                    labelled: list[LabelledImage] | None, name: str = "int8") -> dict:
    """Agreement of ``other`` (reported as ``name``) with the fp32 export's answers on ``photos`` and, with
    ``labelled``, AP/AP50 of both and the drop in AP points."""
    size, pad = input_size(meta), pad_value(meta)
    pre = meta["preprocessing"]
    report = {"compared": name,
              "agreement": agreement(fp32.detections, detect(other, list(photos.values()), size, pad),
                                     list(photos), float(pre["score_threshold"]), int(pre["max_detections"]))}
    if labelled and fp32.ap is not None:
        crops = [item.image for item in labelled]
        ap = {"fp32": fp32.ap, name: coco_ap(labelled, detect(other, crops, size, pad))}
        report["ap"] = {**ap, "images": len(labelled), "ap_drop_points": 100 * (ap["fp32"]["AP"] - ap[name]["AP"]),
                        "ap50_drop_points": 100 * (ap["fp32"]["AP50"] - ap[name]["AP50"])}
    return report


def summary(report: dict) -> str:
    """The report in a few lines."""
    a, name = report["agreement"], report["compared"]
    lines = [f"{name} vs fp32 on {len(a['images'])} calibration photos: recall {a['recall']:.3f} at IoU "
             f"{a['match_iou']} (same class), max score diff {a['max_score_diff']:.4f}, max box diff "
             f"{a['max_box_diff_px']:.2f} px, detections fp32 {a['fp32_detections']} / {name} {a['int8_detections']}"]
    if "ap" in report:
        ap = report["ap"]
        lines.append(f"AP on {ap['images']} labelled images: fp32 {100 * ap['fp32']['AP']:.2f} / {name} "
                     f"{100 * ap[name]['AP']:.2f} (drop {ap['ap_drop_points']:.2f} points); AP50 fp32 "
                     f"{100 * ap['fp32']['AP50']:.2f} / {name} {100 * ap[name]['AP50']:.2f}")
    return "\n".join(lines)


def labelled_set(meta: dict, eval_ann: str | Path | None, eval_images: str | Path | None) -> list[LabelledImage] | None:
    """The labelled set of an export: COCO ``eval_ann`` + ``eval_images``, else the tree model's held-out NEON
    tile, else none."""
    if (eval_ann is None) != (eval_images is None):
        raise QuantizationError("--eval-ann and --eval-images go together")
    if eval_ann is not None and eval_images is not None:
        return coco_labelled(Path(eval_ann), Path(eval_images), tuple(meta["categories"]),
                             int(meta.get("label_offset", 1)))
    return heldout_windows(tuple(meta["input"]["shape"][2:])) if meta["model"] == TREE_MODEL else None


def quantize_export(fp32_dir: str | Path, out_dir: str | Path, *, calibration: str | Path | None = None,
                    eval_ann: str | Path | None = None, eval_images: str | Path | None = None,
                    max_ap_drop: float = 1.0, method: str = "nncf", overwrite: bool = False) -> tuple[Path, dict]:
    """int8 export of the fp32 ONNX export in ``fp32_dir`` into ``out_dir`` (``model.onnx`` + ``metadata.json``
    with ``"precision": "int8"``, the quantization settings and the accuracy report) with ``method`` (one of
    :data:`METHODS`); the labelled set is :func:`labelled_set`'s. Raises
    :class:`QuantizationError` (nothing written) when the AP drop exceeds ``max_ap_drop`` points."""
    from .onnx import set_onnx_metadata

    meta = read_metadata(fp32_dir)
    if meta.get("artifact_format") != "onnx" or meta.get("task") != "detection" or "precision" in meta:
        raise QuantizationError(f"{fp32_dir}: int8 quantization takes fp32 ONNX exports of detection models")
    if method not in METHODS:
        raise QuantizationError(f"int8 method must be one of {', '.join(METHODS)}, not {method!r}")
    size, pad = input_size(meta), pad_value(meta)
    photos = calibration_photos(calibration, meta["model"], size)
    labelled = labelled_set(meta, eval_ann, eval_images)
    fp32_path = Path(fp32_dir) / meta["artifact"]
    with staged_dir(out_dir, overwrite=overwrite) as tmp:
        artifact = tmp / "model.onnx"
        if method == "nncf":
            settings = quantize_nncf(fp32_path, artifact, list(photos.values()), size, pad, labelled=labelled,
                                     max_ap_drop=max_ap_drop)
        else:
            settings = quantize_onnxruntime(fp32_path, artifact, list(photos.values()), size, pad)
        reference = fp32_reference(OnnxRunner(fp32_path), meta, photos, labelled)
        report = accuracy_report(reference, OnnxRunner(artifact), meta, photos, labelled)
        drop = report.get("ap", {}).get("ap_drop_points", 0.0)
        if drop > max_ap_drop:
            raise QuantizationError(f"int8 export refused: AP drop {drop:.2f} points exceeds --max-ap-drop "
                                    f"{max_ap_drop:g}\n{summary(report)}")
        int8_meta = {**{k: v for k, v in meta.items() if k != "parity"}, "artifact": artifact.name,
                     "precision": "int8", "quantization": settings, "accuracy": report,
                     "fp32_parity": meta.get("parity")}
        set_onnx_metadata(artifact, int8_meta)
        write_json(tmp / METADATA_FILE, int8_meta)
    return Path(out_dir) / artifact.name, report


def export_int8(model: str | Path, out_dir: str | Path, *, image_size: tuple[int, int] | None = None,
                pretrained: bool = True, score_threshold: float | None = None, parity: bool = True,
                overwrite: bool = False, **quantize_kwargs) -> tuple[Path, ParityReport | None, dict]:
    """fp32 ONNX export (parity-checked, in a temporary folder), then :func:`quantize_export` into ``out_dir``;
    returns ``(artefact, fp32 parity report, accuracy report)``."""
    from .api import export_model

    with tempfile.TemporaryDirectory() as tmp:
        fp32, parity_report = export_model(model, Path(tmp) / "fp32", fmt="onnx", image_size=image_size,
                                           pretrained=pretrained, score_threshold=score_threshold, parity=parity)
        path, report = quantize_export(fp32.parent, out_dir, overwrite=overwrite, **quantize_kwargs)
    return path, parity_report, report
