"""The onnxruntime backend: exported on first use, every endpoint, and the same detections as the torch backend."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image
from serving_helpers import assert_same_detections, encode

from serving import ServingConfig
from serving.backends import create_backend
from serving.backends.onnx_backend import OnnxBackend

pytest.importorskip("onnxruntime", reason="pip install onnxruntime")


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_cache")


@pytest.fixture(scope="module")
def onnx_backend(onnx_cache):
    config = ServingConfig(backend="onnxruntime", onnx_cache=onnx_cache, threads=2, max_batch_size=4)
    return create_backend("retinanet_lite0_neon_trees", config)  # exported into the cache on first use


@pytest.fixture(scope="module")
def onnx_client(serve, onnx_backend):
    with serve(ServingConfig(score_threshold=0.3), [onnx_backend]) as client:
        yield client


def test_first_use_export_is_cached_and_reused(onnx_backend, onnx_cache):
    (folder,) = [p for p in onnx_cache.iterdir() if not p.name.startswith(".")]
    assert folder.name == "retinanet_lite0_neon_trees-v1-400x400-pretrained"
    assert (folder / "model.onnx").is_file() and (folder / "metadata.json").is_file()
    again = OnnxBackend.from_config("retinanet_lite0_neon_trees", ServingConfig(
        backend="onnxruntime", onnx_cache=onnx_cache, onnx=folder / "model.onnx"))
    assert again.info == onnx_backend.info and again.size == (400, 400)
    assert sorted(p.name for p in onnx_cache.iterdir()) == [folder.name]


def test_same_detections_as_torch(onnx_client, demo_client, neon_tile):
    for pixels in (neon_tile, neon_tile[:, ::-1].copy()):
        data = encode(pixels, "PNG")
        torch_dets = demo_client.post("/v1/detect?score_threshold=0.3", content=data).json()["detections"]
        response = onnx_client.post("/v1/detect?score_threshold=0.3", content=data)
        assert response.status_code == 200
        assert response.json()["model"]["backend"] == "onnxruntime"
        assert len(torch_dets) >= 10
        assert_same_detections(torch_dets, response.json()["detections"], score_threshold=0.3)


def test_endpoints_on_onnxruntime(onnx_client, photos):
    pixels = photos["coffee"]  # 320x213: letterboxed into the export's 400x400, boxes mapped back
    body = onnx_client.post("/v1/detect?score_threshold=0.05", files={"file": ("c.jpg", encode(pixels, "JPEG"),
                                                                               "image/jpeg")}).json()
    assert body["image"] == {"width": pixels.shape[1], "height": pixels.shape[0]}
    for d in body["detections"]:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 < x2 <= pixels.shape[1] and 0 <= y1 < y2 <= pixels.shape[0]
    drawn = onnx_client.post("/v1/detect:visualize", content=encode(pixels, "WEBP"))
    assert drawn.status_code == 200 and Image.open(io.BytesIO(drawn.content)).size == (pixels.shape[1],
                                                                                       pixels.shape[0])
    (model,) = onnx_client.get("/v1/models").json()["models"]
    assert model["backend"] == "onnxruntime" and model["categories"] == ["tree"]
    assert onnx_client.post("/v1/segment", content=encode(pixels, "PNG")).status_code == 422
    assert onnx_client.post("/v1/detect", content=b"\xff\xd8\xff\xe0garbage").status_code == 422


@pytest.mark.slow
def test_segment_on_onnxruntime(serve, tmp_path, photos):
    """A PSPNet export (random weights, 64 px): the label map comes back at the photo's size."""
    import zoo
    from export import export_onnx

    export_onnx(zoo.load("pspnet_r50_obj365_voc", pretrained=False), tmp_path / "psp", image_size=(64, 64),
                parity=False)
    backend = OnnxBackend(tmp_path / "psp", threads=2)
    assert backend.info.label_offset == 1  # VOC: 20 names + background at 0
    pixels = photos["chelsea"]
    with serve(ServingConfig(), [backend]) as client:
        body = client.post("/v1/segment", content=encode(pixels, "PNG")).json()
        rle = client.post("/v1/segment?format=rle", content=encode(pixels, "PNG")).json()
    label_map = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["label_map_png"]))))
    assert label_map.shape == pixels.shape[:2] and body["model"]["backend"] == "onnxruntime"
    assert sum(c["area"] for c in body["classes"]) == label_map.size
    assert [c["area"] for c in rle["classes"]] == [c["area"] for c in body["classes"]]


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_openvino_backend_runs_the_same_export(serve, onnx_client, onnx_cache, neon_tile, precision):
    """``--backend openvino`` serves the cached export: f32 within the fp32 tolerance of onnxruntime, bf16 within
    export.parity.BF16_TOLERANCE."""
    pytest.importorskip("openvino")
    from export.api import tolerance_for
    from export.runtime import bf16_supported

    if precision == "bf16" and not bf16_supported():
        pytest.skip("this CPU has no native bfloat16")
    config = ServingConfig(backend="openvino", precision=precision, onnx_cache=onnx_cache, threads=2)
    backend = create_backend("retinanet_lite0_neon_trees", config)
    data = encode(neon_tile, "PNG")
    with serve(ServingConfig(score_threshold=0.3), [backend]) as client:
        body = client.post("/v1/detect?score_threshold=0.3", content=data).json()
    assert body["model"]["backend"] == "openvino" and len(body["detections"]) >= 10
    expected = onnx_client.post("/v1/detect?score_threshold=0.3", content=data).json()["detections"]
    assert_same_detections(expected, body["detections"], score_threshold=0.3, tol=tolerance_for(precision))
