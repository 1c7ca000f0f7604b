"""int8 exports (export.quantize): calibration-set errors, NNCF and ONNX Runtime quantization, the accuracy report and
its AP gate (also under --precision auto), int8 models run by the serving runtimes' runners."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("skimage")

from export.parity import _iou  # noqa: E402
from export.quantize import QuantizationError, calibration_photos, quantize_export  # noqa: E402
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
    assert meta["quantization"]["tool"].startswith("nncf") and meta["quantization"]["calibration_images"] >= 8
    agreement = meta["accuracy"]["agreement"]
    assert len(agreement["images"]) >= 8 and 0 < agreement["recall"] <= 1
    import onnx

    ops = {node.op_type for node in onnx.load(str(int8_dir / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "NonMaxSuppression"} <= ops
    with pytest.raises(QuantizationError, match="takes fp32 ONNX exports"):
        quantize_export(int8_dir, int8_dir.parent / "again")


def test_onnxruntime_method_and_unknown_method(fp32_dir: Path, tmp_path: Path) -> None:
    path, report = quantize_export(fp32_dir, tmp_path / "ort", method="onnxruntime")
    meta = json.loads((path.parent / "metadata.json").read_text())
    assert meta["quantization"]["tool"].startswith("onnxruntime") and report["compared"] == "int8"
    with pytest.raises(QuantizationError, match="must be one of nncf, onnxruntime"):
        quantize_export(fp32_dir, tmp_path / "other", method="tensorrt")
    assert not (tmp_path / "other").exists()


def test_int8_runs_on_serving_runtimes_close_to_fp32(fp32_dir: Path, int8_dir: Path) -> None:
    """The int8 folder runs through export.runtime.runner_for, as the onnxruntime and openvino backends run it: the
    fp32 model's most confident box is found again, same class, close score."""
    from export.contract import DETECTION_OUTPUTS
    from export.quantize import detect
    from export.runtime import runner_for

    photo = [Image.open(SAMPLES / "astronaut.jpg").convert("RGB")]
    runtimes = ("onnxruntime", "openvino") if importlib.util.find_spec("openvino") else ("onnxruntime",)
    for runtime in runtimes:
        ref, out = (detect(runner_for("onnx", folder / "model.onnx", DETECTION_OUTPUTS, runtime, threads=1), photo,
                           (416, 416), 114 / 255)[0] for folder in (fp32_dir, int8_dir))
        assert len(ref["scores"]) and len(out["scores"])
        top = int(np.argmax(ref["scores"]))
        ious = _iou(ref["boxes"][top:top + 1], out["boxes"])[0]
        best = int(np.argmax(ious))
        assert ious[best] > 0.8 and out["labels"][best] == ref["labels"][top]
        assert abs(out["scores"][best] - ref["scores"][top]) < 0.1


def _fp32_answers_as_ground_truth(fp32_dir: Path, tmp_path: Path) -> Path:
    """A COCO file whose boxes are the fp32 export's own detections on three photos: fp32 scores AP 100 on it, so any
    change in int8 is a drop."""
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
    return ann


def test_ap_drop_beyond_limit_refused(fp32_dir: Path, tmp_path: Path) -> None:
    ann = _fp32_answers_as_ground_truth(fp32_dir, tmp_path)
    drop = r"(?s)AP drop .* exceeds --max-ap-drop 0\b.*AP on 3 labelled images: fp32 100\.00"
    with pytest.raises(QuantizationError, match=drop):
        quantize_export(fp32_dir, tmp_path / "out", eval_ann=ann, eval_images=SAMPLES, max_ap_drop=0.0,
                        method="onnxruntime")
    assert not (tmp_path / "out").exists()


def test_auto_never_picks_a_refused_precision(fp32_dir: Path, tmp_path: Path) -> None:
    """--precision auto with an AP limit int8 cannot meet: the int8 export is refused, every timed candidate that is
    left passed, and the choice is the fastest of them."""
    from export.fastest import CHOICE_FILE, choose_fastest

    ann = _fp32_answers_as_ground_truth(fp32_dir, tmp_path)
    out = tmp_path / "auto"
    choice = choose_fastest("yolox_nano_coco", out, parity=False, threads=1, eval_ann=ann, eval_images=SAMPLES,
                            max_ap_drop=0.0, method="onnxruntime")
    assert json.loads((out / CHOICE_FILE).read_text()) == choice
    assert "exceeds --max-ap-drop 0" in choice["accuracy"]["onnxruntime int8"] and not (out / "int8").exists()
    rows = choice["candidates"]
    assert {(r["runtime"], r["precision"]) for r in rows} >= {("onnxruntime", "fp32")}
    assert all(r["precision"] != "int8" for r in rows)
    passing = [r for r in rows if r["passed"]]
    assert choice["choice"]["images_per_s"] == max(r["images_per_s"] for r in passing)
    assert f"--onnx {out / choice['choice']['folder']}" in choice["choice"]["serve"]
    assert (out / choice["choice"]["folder"] / "model.onnx").is_file()


def test_tree_model_heldout_ap_report(tmp_path: Path) -> None:
    """The tree model's int8 export reports AP on its held-out NEON tile (accuracy-aware NNCF) within 1 point."""
    from export.api import export_model

    fp32, _ = export_model("retinanet_lite0_neon_trees", tmp_path / "fp32", parity=False)
    _, report = quantize_export(fp32.parent, tmp_path / "int8")
    ap = report["ap"]
    assert ap["images"] > 1 and ap["fp32"]["AP"] > 0 and ap["ap_drop_points"] <= 1.0
    meta = json.loads((tmp_path / "int8" / "metadata.json").read_text())
    assert meta["quantization"]["accuracy_control"]["labelled_images"] == ap["images"]


def test_cli_small_calibration_set_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from export.__main__ import main

    for i in range(3):
        shutil.copy(SAMPLES / "cat.jpg", tmp_path / f"{i}.jpg")
    code = main(["yolox_nano_coco", "--precision", "int8", "--calibration", str(tmp_path), "--no-parity",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "needs at least 8" in err
    assert not (tmp_path / "out").exists()


def test_float_nodes_of_a_two_stage_graph(tmp_path: Path) -> None:
    """A two-stage detector's box head (weighted layers after the proposal selection that feed other weighted
    layers) is quantized; its predictors, everything after them and the rest after the selection stay float."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from export.quantize import postprocessing_nodes

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(np.zeros(shape, np.float32), name)

    nodes = [
        helper.make_node("Conv", ["images", "w_backbone"], ["features"], name="backbone"),
        helper.make_node("Conv", ["features", "w_rpn"], ["objectness"], name="rpn_head"),
        helper.make_node("Flatten", ["objectness"], ["flat_objectness"], name="rpn_flatten"),
        helper.make_node("TopK", ["flat_objectness", "k"], ["top_scores", "top_index"], name="proposals"),
        helper.make_node("Flatten", ["features"], ["flat_features"], name="pool"),
        helper.make_node("Gather", ["flat_features", "top_index"], ["pooled"], name="roi_pool", axis=1),
        helper.make_node("Reshape", ["pooled", "box_shape"], ["rois"], name="rois"),
        helper.make_node("MatMul", ["rois", "w_fc6"], ["fc6"], name="fc6"),
        helper.make_node("Relu", ["fc6"], ["fc6_relu"], name="fc6_relu"),
        helper.make_node("MatMul", ["fc6_relu", "w_fc7"], ["fc7"], name="fc7"),
        helper.make_node("MatMul", ["fc7", "w_cls"], ["scores"], name="cls_score"),
        helper.make_node("Sigmoid", ["scores"], ["probabilities"], name="probabilities"),
    ]
    graph = helper.make_graph(
        nodes, "two_stage", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, None)],
        [weight("w_backbone", 4, 3, 1, 1), weight("w_rpn", 1, 4, 1, 1), weight("w_fc6", 4, 8), weight("w_fc7", 8, 8),
         weight("w_cls", 8, 3), numpy_helper.from_array(np.array([4], np.int64), "k"),
         numpy_helper.from_array(np.array([4, 4], np.int64), "box_shape")])
    path = tmp_path / "two_stage.onnx"
    onnx.save(helper.make_model(graph), str(path))
    floats = set(postprocessing_nodes(path))
    assert {"cls_score", "probabilities", "roi_pool", "rois", "fc6_relu"} <= floats
    assert not {"backbone", "rpn_head", "fc6", "fc7"} & floats


def test_quantizer_moves_through_data_movement_to_the_conv(tmp_path: Path) -> None:
    """A quantizer in front of YOLOX's Focus (Slice, SpaceToDepth) ends up at the convolution's input, with the same
    answers on ONNX Runtime."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    from export.quantize import quantizers_next_to_weights

    rng = np.random.default_rng(0)
    initializers = [numpy_helper.from_array(np.array(0.02, np.float32), "scale"),
                    numpy_helper.from_array(np.array(3, np.uint8), "zero"),
                    numpy_helper.from_array(np.array([0, 0, 0, 0], np.int64), "starts"),
                    numpy_helper.from_array(np.array([1, 3, 8, 8], np.int64), "ends"),
                    numpy_helper.from_array(rng.normal(size=(4, 12, 1, 1)).astype(np.float32), "w")]
    nodes = [helper.make_node("QuantizeLinear", ["images", "scale", "zero"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["dq"], name="dq"),
             helper.make_node("Slice", ["dq", "starts", "ends"], ["sliced"], name="slice"),
             helper.make_node("SpaceToDepth", ["sliced"], ["focus"], name="focus", blocksize=2),
             helper.make_node("Conv", ["focus", "w"], ["out"], name="stem")]
    graph = helper.make_graph(nodes, "focus", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                             [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 4, 4])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    images = rng.uniform(0, 1, (1, 3, 8, 8)).astype(np.float32)

    def run(m: onnx.ModelProto) -> np.ndarray:
        session = onnxruntime.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"images": images})[0]

    before = run(model)
    quantizers_next_to_weights(model)
    onnx.checker.check_model(model)
    by_output = {output: node for node in model.graph.node for output in node.output}
    stem = next(node for node in model.graph.node if node.name == "stem")
    assert by_output[stem.input[0]].op_type == "DequantizeLinear"
    assert next(node for node in model.graph.node if node.name == "slice").input[0] == "images"
    np.testing.assert_allclose(run(model), before, rtol=0, atol=1e-5)
