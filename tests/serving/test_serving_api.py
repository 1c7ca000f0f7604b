"""Every endpoint of the service, in-process on the torch backend with the demo model and real images."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image
from serving_helpers import encode

from serving import ServingConfig
from serving.backends import model_info
from serving.backends.torch_backend import TorchBackend


def test_detect_finds_tree_crowns_on_the_neon_tile(demo_client, neon_tile):
    response = demo_client.post("/v1/detect", content=encode(neon_tile, "PNG"), headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"] == {"width": 400, "height": 400}
    assert body["model"]["name"] == "retinanet_lite0_neon_trees" and body["model"]["backend"] == "torch"
    assert body["request_id"] == response.headers["x-request-id"]
    dets = body["detections"]
    assert len(dets) >= 10  # OSBS_029 holds 61 annotated crowns
    assert {d["name"] for d in dets} == {"tree"} and {d["label"] for d in dets} == {1}
    boxes = np.array([d["box"] for d in dets])
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert boxes.min() >= 0 and boxes.max() <= 400
    scores = [d["score"] for d in dets]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.3
    assert set(body["timings"]) == {"decode_ms", "queue_ms", "inference_ms", "total_ms"}


def test_multipart_and_raw_body_give_the_same_answer(demo_client, photos):
    data = encode(photos["astronaut"], "JPEG", quality=90)
    raw = demo_client.post("/v1/detect?score_threshold=0.05", content=data, headers={"content-type": "image/jpeg"})
    form = demo_client.post("/v1/detect?score_threshold=0.05", files={"file": ("a.jpg", data, "image/jpeg")})
    assert raw.status_code == form.status_code == 200
    assert raw.json()["detections"] == form.json()["detections"]
    assert raw.json()["image"] == {"width": photos["astronaut"].shape[1], "height": photos["astronaut"].shape[0]}


def test_webp_upload_and_exif_orientation(demo_client, photos):
    pixels = photos["coffee"]
    response = demo_client.post("/v1/detect", content=encode(pixels, "WEBP"))
    assert response.status_code == 200
    assert response.json()["image"] == {"width": pixels.shape[1], "height": pixels.shape[0]}
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed: the reported size is the displayed one
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", exif=exif)
    rotated = demo_client.post("/v1/detect", content=buffer.getvalue())
    assert rotated.json()["image"] == {"width": pixels.shape[0], "height": pixels.shape[1]}


def test_threshold_max_detections_and_classes(demo_client, neon_tile):
    data = encode(neon_tile, "PNG")
    low = demo_client.post("/v1/detect?score_threshold=0.3", content=data).json()["detections"]
    high = demo_client.post("/v1/detect?score_threshold=0.6&classes=tree", content=data).json()["detections"]
    assert high == [d for d in low if d["score"] >= 0.6]
    top2 = demo_client.post("/v1/detect?max_detections=2&classes=1", content=data).json()["detections"]
    assert top2 == low[:2]
    unknown = demo_client.post("/v1/detect?classes=tree,giraffe", content=data)
    assert unknown.status_code == 422 and "giraffe" in unknown.json()["error"]["message"]
    assert demo_client.post("/v1/detect?classes=2", content=data).status_code == 422


def test_visualize_draws_the_detections(demo_client, neon_tile):
    data = encode(neon_tile, "PNG")
    count = len(demo_client.post("/v1/detect?score_threshold=0.5", content=data).json()["detections"])
    response = demo_client.post("/v1/detect:visualize?score_threshold=0.5", content=data)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert int(response.headers["x-detections"]) == count > 0
    drawn = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert drawn.shape == neon_tile.shape
    assert (drawn != neon_tile).any(axis=2).mean() > 0.01  # boxes and names changed pixels
    jpeg = demo_client.post("/v1/detect:visualize?format=jpeg&score_threshold=0.5", content=data)
    assert jpeg.headers["content-type"] == "image/jpeg" and jpeg.content[:3] == b"\xff\xd8\xff"


def test_models_health_readiness_and_metrics(demo_client, photos):
    models = demo_client.get("/v1/models").json()
    assert models["default"] == "retinanet_lite0_neon_trees"
    (entry,) = models["models"]
    assert entry["categories"] == ["tree"] and entry["task"] == "detection" and entry["ready"]
    assert demo_client.get("/healthz").json() == {"status": "ok", "detail": None}
    assert demo_client.get("/readyz").status_code == 200
    demo_client.post("/v1/detect", content=encode(photos["chelsea"], "JPEG"), headers={"x-request-id": "abc-123"})
    demo_client.post("/v1/detect?score_threshold=-1", content=b"")
    text = demo_client.get("/metrics").text
    assert 'serving_requests_total{endpoint="/v1/detect",model="retinanet_lite0_neon_trees",status="200"}' in text
    assert 'status="422"' in text
    assert "serving_request_latency_seconds_bucket" in text and "serving_batch_size_count" in text
    assert 'serving_queue_depth{model="retinanet_lite0_neon_trees"}' in text


def test_request_id_is_echoed(demo_client, photos):
    response = demo_client.post("/v1/detect", content=encode(photos["chelsea"], "PNG"),
                                headers={"x-request-id": "client-7"})
    assert response.headers["x-request-id"] == "client-7" and response.json()["request_id"] == "client-7"


def test_demo_page_and_openapi(demo_client):
    page = demo_client.get("/")
    assert page.status_code == 200 and "/static/demo.js" in page.text
    assert demo_client.get("/static/demo.js").status_code == 200
    spec = demo_client.get("/openapi.json").json()
    for path in ("/v1/detect", "/v1/detect:visualize", "/v1/segment", "/v1/models", "/healthz", "/readyz"):
        assert path in spec["paths"]
    assert "image/png" in spec["paths"]["/v1/detect"]["post"]["requestBody"]["content"]


@pytest.fixture(scope="module")
def segment_client(serve, demo_backend):
    import zoo

    model = zoo.load("pspnet_r50_obj365_voc", pretrained=False)  # random weights: the encoding is under test
    backend = TorchBackend(model, model_info(model, "torch"), max_batch_size=2, segmentation_size=64)
    with serve(ServingConfig(), [backend, demo_backend]) as client:
        yield client


def test_segment_png_label_map(segment_client, photos):
    pixels = photos["chelsea"]
    response = segment_client.post("/v1/segment?model=pspnet_r50_obj365_voc", content=encode(pixels, "PNG"))
    assert response.status_code == 200, response.text
    body = response.json()
    label_map = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["label_map_png"]))))
    assert label_map.shape == pixels.shape[:2]
    classes = body["classes"]
    assert sum(c["area"] for c in classes) == label_map.size
    for entry in classes:
        assert (label_map == entry["label"]).sum() == entry["area"]
    assert all(c["rle"] is None for c in classes)


def test_segment_rle_decodes_with_pycocotools(segment_client, photos):
    mask_utils = pytest.importorskip("pycocotools.mask", reason="pycocotools decodes the RLE independently")
    pixels = photos["coffee"]
    data = encode(pixels, "JPEG")
    png = segment_client.post("/v1/segment?model=pspnet_r50_obj365_voc", content=data).json()
    label_map = np.asarray(Image.open(io.BytesIO(base64.b64decode(png["label_map_png"]))))
    rle = segment_client.post("/v1/segment?model=pspnet_r50_obj365_voc&format=rle", content=data).json()
    assert "classes" in rle, rle
    assert rle["label_map_png"] is None
    for entry in rle["classes"]:
        coco = mask_utils.frPyObjects({"size": entry["rle"]["size"], "counts": entry["rle"]["counts"]},
                                      *entry["rle"]["size"])
        assert np.array_equal(mask_utils.decode(coco).astype(bool), label_map == entry["label"])
    first = rle["classes"][0]["name"]
    only = segment_client.post(f"/v1/segment?model=pspnet_r50_obj365_voc&classes={first}", content=data).json()
    assert "classes" in only, (first, only)
    assert [c["name"] for c in only["classes"]] == [first]


def test_model_task_mismatch_is_a_422(segment_client, photos):
    data = encode(photos["chelsea"], "JPEG")
    wrong = segment_client.post("/v1/detect?model=pspnet_r50_obj365_voc", content=data)
    assert wrong.status_code == 422 and "/v1/segment" in wrong.json()["error"]["message"]
    assert segment_client.post("/v1/detect", content=data).status_code == 422  # the default is the segmenter
    missing = segment_client.post("/v1/detect?model=nope", content=data)
    assert missing.status_code == 404 and "retinanet_lite0_neon_trees" in missing.json()["error"]["message"]


def test_classes_parameter_names_labels_and_background():
    from serving.errors import BadParameter
    from serving.results import parse_classes

    voc = ("aeroplane", "bicycle", "bird")
    assert parse_classes("bird, 1", voc) == {3, 1}
    assert parse_classes(None, voc) is None
    assert parse_classes("background,Bicycle", voc, background=True) == {0, 2}
    with pytest.raises(BadParameter, match="unknown class 'background'"):
        parse_classes("background", voc)  # detectors have no background answers to select
    with pytest.raises(BadParameter, match="out of range 1..3"):
        parse_classes("0", voc)
