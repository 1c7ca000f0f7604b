"""int8 exports (export.quantize): calibration-set errors, the accuracy report and its AP gate, serving int8."""
from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("skimage")

from export.quantize import QuantizationError, calibration_photos, quantize_export  # noqa: E402
from export.parity import _iou  # noqa: E402
from zoo.specs import packaged_export  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "serving" / "static" / "samples"


@pytest.fixture(scope="module")
def fp32_dir() -> Path:
    folder = packaged_export("yolox_nano_coco", 416)
    if folder is None:
        pytest.skip("the packaged YOLOX-Nano export is missing")
    return folder


@pytest.fixture(scope="module")
def int8_dir(fp32_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "yolox_int8"
    quantize_export(fp32_dir, out)
    return out


def test_calibration_set_too_small_or_unreadable(tmp_path: Path) -> None:
    for i in range(3):
        shutil.copy(SAMPLES / "cat.jpg", tmp_path / f"{i}.jpg")
    with pytest.raises(QuantizationError, match="has 3 images; int8 calibration needs at least 8"):
        calibration_photos(tmp_path, "yolox_nano_coco", (416, 416))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(QuantizationError, match="broken.jpg is unreadable"):
        calibration_photos(tmp_path, "yolox_nano_coco", (416, 416))
    with pytest.raises(QuantizationError, match="neither a folder"):
        calibration_photos(tmp_path / "missing", "yolox_nano_coco", (416, 416))


def test_int8_metadata_and_report(int8_dir: Path) -> None:
    meta = json.loads((int8_dir / "metadata.json").read_text())
    assert meta["precision"] == "int8" and meta["quantization"]["format"] == "QDQ"
    agreement = meta["accuracy"]["agreement"]
    assert len(agreement["images"]) >= 8 and 0 < agreement["recall"] <= 1
    import onnx

    ops = {node.op_type for node in onnx.load(str(int8_dir / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "NonMaxSuppression"} <= ops
    with pytest.raises(QuantizationError, match="takes fp32 ONNX exports"):
        quantize_export(int8_dir, int8_dir.parent / "again")


def test_serving_int8_close_to_fp32(fp32_dir: Path, int8_dir: Path) -> None:
    """``--backend onnxruntime|openvino --onnx INT8_FOLDER`` as for fp32; /v1/models names the precision."""
    from fastapi.testclient import TestClient

    from serving import ServingConfig
    from serving.app import create_app
    from serving.backends.onnx_backend import OnnxBackend

    data = (SAMPLES / "astronaut.jpg").read_bytes()
    runtimes = ("onnxruntime", "openvino") if importlib.util.find_spec("openvino") else ("onnxruntime",)
    for runtime in runtimes:
        answers = {}
        for folder in (fp32_dir, int8_dir):
            config = ServingConfig(backend=runtime, onnx=folder, threads=1)
            with TestClient(create_app(config, [OnnxBackend.from_config("yolox_nano_coco", config)])) as client:
                while client.get("/readyz").status_code != 200:
                    time.sleep(0.05)
                (model,) = client.get("/v1/models").json()["models"]
                answers[model["precision"]] = client.post("/v1/detect", content=data).json()["detections"]
        ref, out = answers["fp32"], answers["int8"]
        assert ref and out
        top = max(ref, key=lambda d: d["score"])
        ious = _iou(np.array([top["box"]]), np.array([d["box"] for d in out]))[0]
        best = out[int(np.argmax(ious))]
        assert ious.max() > 0.8 and best["label"] == top["label"] and abs(best["score"] - top["score"]) < 0.1


def test_ap_drop_beyond_limit_refused(fp32_dir: Path, tmp_path: Path) -> None:
    """Ground truth = the fp32 export's own detections, so fp32 scores AP 100 and any int8 change is a drop."""
    from export.quantize import detect
    from export.runtime import OnnxRunner

    meta = json.loads((fp32_dir / "metadata.json").read_text())
    names = ["astronaut.jpg", "coffee.jpg", "cat.jpg"]
    photos = [Image.open(SAMPLES / n).convert("RGB") for n in names]
    dets = detect(OnnxRunner(fp32_dir / "model.onnx", 1), photos, (416, 416), 114 / 255)
    coco = {"images": [{"id": i, "file_name": n, "height": p.height, "width": p.width}
                       for i, (n, p) in enumerate(zip(names, photos))],
            "categories": [{"id": i, "name": c} for i, c in enumerate(meta["categories"], 1)],
            "annotations": [{"id": 1000 * i + k, "image_id": i, "category_id": int(lab), "iscrowd": 0,
                             "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
                            for i, d in enumerate(dets) for k, (b, lab) in enumerate(zip(d["boxes"], d["labels"]))]}
    ann = tmp_path / "gt.json"
    ann.write_text(json.dumps(coco))
    drop = r"(?s)AP drop .* exceeds --max-ap-drop 0\b.*AP on 3 labelled images: fp32 100\.00"
    with pytest.raises(QuantizationError, match=drop):
        quantize_export(fp32_dir, tmp_path / "out", eval_ann=ann, eval_images=SAMPLES, max_ap_drop=0.0)
    assert not (tmp_path / "out").exists()


def test_cli_small_calibration_set_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from export.__main__ import main

    for i in range(3):
        shutil.copy(SAMPLES / "cat.jpg", tmp_path / f"{i}.jpg")
    code = main(["yolox_nano_coco", "--precision", "int8", "--calibration", str(tmp_path), "--no-parity",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "needs at least 8" in err
    assert not (tmp_path / "out").exists()
