"""yolox_nano_coco, the embedded default: reproducible conversion from the original ONNX, parity with that ONNX on real
photos, exports, head transfer, and YOLOX's losses (SimOTA) learning a tiny example."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo.letterbox import boxes_to_photo, letterbox
from zoo.models import build
from zoo.models.yolox_loss import simota_assign

REPO = Path(__file__).resolve().parents[1]
# The original graph (Megvii's weights, exported by Kazuhito00; see zoo/weights/LICENSE.yolox_nano_coco*). It is
# not shipped in the package: the repository's checkout sits beside shared/ that holds it.
ORIGINAL_ONNX = REPO.parent / "shared" / "assets" / "yolox_nano_coco" / "yolox_nano_416x416.onnx"
ORIGINAL_SHA256 = "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14"


def original_onnx() -> Path:
    if not ORIGINAL_ONNX.is_file():
        pytest.skip(f"the original YOLOX-Nano ONNX is not at {ORIGINAL_ONNX}")
    assert hashlib.sha256(ORIGINAL_ONNX.read_bytes()).hexdigest() == ORIGINAL_SHA256
    return ORIGINAL_ONNX


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    """Real photos that ship in packages: scikit-image's samples and matplotlib's grace_hopper."""
    data = pytest.importorskip("skimage.data")
    cbook = pytest.importorskip("matplotlib.cbook")
    out = {name: Image.fromarray(getattr(data, name)()) for name in ("astronaut", "chelsea", "coffee")}
    out["motorcycle"] = Image.fromarray(data.stereo_motorcycle()[0])
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        out["grace_hopper"] = Image.open(f).convert("RGB")
    return out


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.set_num_threads(2)
    return zoo.load("yolox_nano_coco")


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy NMS in NumPy (the reference side uses no torch)."""
    order, keep = np.argsort(-scores, kind="stable"), []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        tl = np.maximum(boxes[i, :2], boxes[rest, :2])
        br = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.clip(br - tl, 0, None).prod(1)
        area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
        order = rest[inter / (area(boxes[i]) + area(boxes[rest]) - inter) <= iou]
    return keep


def reference_detections(session, photo: Image.Image) -> dict[str, np.ndarray]:
    """onnxruntime on the original graph with its documented contract (PROVENANCE.md): BGR 0..255, letterboxed
    top-left into 416 x 416 with grey 114; rows (dx, dy, log w, log h, objectness, 80 class scores) on the 8/16/32
    grids; score = objectness x best class; class-aware NMS 0.65 above 0.05; boxes back to photo pixels."""
    canvas, scale = letterbox(photo, (416, 416), 114 / 255)
    out = session.run(None, {"images": (canvas[::-1] * 255)[None].astype(np.float32)})[0][0]
    grid, stride = [], []
    for s in (8, 16, 32):
        ys, xs = np.meshgrid(np.arange(416 // s), np.arange(416 // s), indexing="ij")
        grid.append(np.stack([xs, ys], -1).reshape(-1, 2))
        stride.append(np.full((xs.size, 1), s))
    grid, stride = np.concatenate(grid), np.concatenate(stride)
    centre, size = (out[:, :2] + grid) * stride, np.exp(out[:, 2:4]) * stride
    boxes = np.concatenate([centre - size / 2, centre + size / 2], 1)
    classes, scores = out[:, 5:].argmax(1), out[:, 4] * out[:, 5:].max(1)
    keep = scores > 0.05
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    kept = [int(np.flatnonzero(classes == c)[k]) for c in np.unique(classes)
            for k in _nms(boxes[classes == c], scores[classes == c], 0.65)]
    kept = sorted(kept, key=lambda i: -scores[i])[:100]
    return {"boxes": boxes_to_photo(boxes[kept], scale, (photo.height, photo.width)), "scores": scores[kept],
            "labels": classes[kept] + 1}


def test_conversion_command_reproduces_the_shipped_weights(tmp_path):
    src = original_onnx()
    out = tmp_path / "yolox_nano_coco.safetensors"
    subprocess.run([sys.executable, "-m", "zoo.convert.onnx_folded", "yolox_nano_coco", str(src), str(out)],
                   check=True, cwd=REPO, capture_output=True)
    spec = zoo.get_spec("yolox_nano_coco")
    assert hashlib.sha256(out.read_bytes()).hexdigest() == spec.sha256
    assert out.stat().st_size == spec.file_size
    shipped = Path(spec.source)
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == spec.sha256
    for notice in ("LICENSE.yolox_nano_coco", "LICENSE.yolox_nano_coco.export-MIT"):
        assert (shipped.parent / notice).is_file()


def test_same_detections_as_the_original_onnx(model, photos):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(original_onnx()), providers=["CPUExecutionProvider"])
    for name, photo in photos.items():
        ref = reference_detections(session, photo)
        # the zoo model on the same letterboxed canvas, as every serving backend feeds it
        canvas, scale = letterbox(photo, (416, 416), zoo.get_spec("yolox_nano_coco").preprocessing.pad_value)
        with torch.inference_mode():
            out = model([torch.from_numpy(canvas)])[0]
        boxes = boxes_to_photo(out["boxes"].numpy(), scale, (photo.height, photo.width))
        assert len(out["scores"]) == len(ref["scores"]) > 0, name
        assert (out["labels"].numpy() == ref["labels"]).all(), name
        assert np.abs(boxes - ref["boxes"]).max() <= 0.5, name
        assert np.abs(out["scores"].numpy() - ref["scores"]).max() <= 1e-3, name


def test_finds_everyday_objects(model, photos):
    expected = {"astronaut": "person", "chelsea": "cat", "coffee": "cup", "motorcycle": "motorcycle",
                "grace_hopper": "person"}
    for name, label in expected.items():
        image = torch.from_numpy(np.asarray(photos[name]).copy()).permute(2, 0, 1).float() / 255
        with torch.inference_mode():
            out = model([image])[0]  # the model's own letterbox in torch
        top = model.categories[int(out["labels"][0]) - 1]
        assert top == label and float(out["scores"][0]) >= 0.5, (name, top, float(out["scores"][0]))
        boxes = out["boxes"]
        assert (boxes[:, 0::2] <= photos[name].width).all() and (boxes[:, 1::2] <= photos[name].height).all()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("name", ["yolox_nano_coco", "retinanet_lite0_neon_trees"])
def test_every_shipped_model_exports_with_parity(tmp_path, fmt, name):
    from export import export_model

    path, report = export_model(name, tmp_path / "export", fmt=fmt)
    assert path.is_file() and report.passed, report.table()


def test_head_transfer_keeps_mapped_rows_and_reports_the_fresh_ones(photos):
    model = zoo.load("yolox_nano_coco", categories=["cat", "giraffe_robot", "person"])
    assert model.categories == ("cat", "giraffe_robot", "person")
    assert model.head.cls_preds[0].weight.shape[0] == 3
    image = torch.from_numpy(np.asarray(photos["astronaut"]).copy()).permute(2, 0, 1).float() / 255
    with torch.inference_mode():
        out = model([image])[0]
    assert model.categories[int(out["labels"][0]) - 1] == "person" and float(out["scores"][0]) > 0.9


def test_simota_assigns_each_object_its_nearby_predictions():
    grid_xy = torch.stack(torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="xy"), -1).reshape(-1, 2)
    centres = (grid_xy + 0.5) * 8
    strides = torch.full((64,), 8.0)
    gt = torch.tensor([[4.0, 4.0, 28.0, 28.0], [36.0, 36.0, 60.0, 60.0]])
    # predictions: each anchor predicts a 24-px box around its centre, perfectly placed where an object is
    boxes = torch.cat([centres - 12, centres + 12], 1)
    fg, matched, ious = simota_assign(boxes, torch.zeros(64, 3), torch.zeros(64), centres, strides, gt_boxes=gt,
                                      gt_classes=torch.tensor([0, 2]))
    assert fg.sum() == len(matched) >= 2
    fg_centres = centres[fg]
    for c, g in zip(fg_centres, matched):
        box = gt[g]
        assert abs(c[0] - (box[0] + box[2]) / 2) < 1.5 * 8 and abs(c[1] - (box[1] + box[3]) / 2) < 1.5 * 8
    assert set(matched.tolist()) == {0, 1} and (ious > 0).all()


def test_losses_overfit_a_tiny_example():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = build("yolox_nano", 4)
    model.train()
    image = torch.rand(3, 160, 200)
    target = {"boxes": torch.tensor([[20.0, 30.0, 90.0, 120.0], [100.0, 40.0, 180.0, 150.0]]),
              "labels": torch.tensor([1, 3])}
    optimizer = torch.optim.AdamW(model.parameters(), 2e-3)
    first = None
    for _ in range(150):
        losses = model([image], [target])
        assert set(losses) == {"loss_iou", "loss_obj", "loss_cls"}
        loss = sum(losses.values())
        first = float(loss.detach()) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss) < first / 4
    model.eval()
    with torch.inference_mode():
        out = model([image])[0]
    top = out["scores"] > 0.3
    from torchvision.ops import box_iou

    ious = box_iou(target["boxes"], out["boxes"][top])
    for g in range(2):
        best = int(ious[g].argmax())
        assert float(ious[g, best]) > 0.5 and int(out["labels"][top][best]) == int(target["labels"][g])


def test_frozen_batchnorm_keeps_the_pretrained_function_in_train_mode(model, photos):
    image = torch.from_numpy(np.asarray(photos["coffee"]).copy()).permute(2, 0, 1).float() / 255
    x, _ = model.transform([image])
    with torch.no_grad():
        before = model.raw_outputs(x)
        model.train()
        assert not any(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        during = model.raw_outputs(x)
        model.eval()
    assert torch.allclose(before, during)
