"""A generated Triton repository served by a real tritonserver (nvidia-pytriton 0.7.0, Python backend only): the
ensemble over HTTP and gRPC returns the in-process PyTorch detections, concurrent requests are batched, bad input
is refused. Skipped when the server cannot be installed (no PyPI) or started here."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

tritonclient_http = pytest.importorskip("tritonclient.http")
tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
pytest.importorskip("skimage")

from export_helpers import tiny_model  # noqa: E402
from triton_utils import start_or_skip  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from export.parity import Tolerance, compare_detections, sample_photos  # noqa: E402
from export.triton import build_repository, validate_config  # noqa: E402
from zoo.letterbox import boxes_to_photo, letterbox  # noqa: E402

BASE = "retinanet_r50_obj365_coco"
SIZE = 256


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    torch.set_num_threads(2)
    photos = sample_photos(("astronaut", "coffee"))
    model = tiny_model("retinanet", SIZE)
    repo = build_repository(model, tmp_path_factory.mktemp("triton") / "repo", photos=photos, max_batch_size=8,
                            queue_delay_us=200_000)
    server = start_or_skip(repo)
    try:
        client = tritonclient_http.InferenceServerClient(server.http_url, concurrency=8)
        for name in (BASE, f"{BASE}_python", f"{BASE}_preprocess", f"{BASE}_postprocess"):
            assert client.is_model_ready(name), server.log()[-3000:]
        yield server, client, model, photos, repo
    finally:
        server.stop()


def _png(photo) -> bytes:
    buf = io.BytesIO()
    photo.save(buf, "PNG")
    return buf.getvalue()


def _eager(model, photo) -> dict[str, np.ndarray]:
    """In-process PyTorch on the same letterboxed photo, boxes back in photo pixels."""
    array, scale = letterbox(photo, (SIZE, SIZE))
    with torch.inference_mode():
        out = {k: v.numpy() for k, v in model([torch.from_numpy(array)])[0].items()}
    out["boxes"] = boxes_to_photo(out["boxes"], scale, (photo.height, photo.width))
    return out


def _check_same(result, expected, model):
    n = int(result["num_detections"][0, 0])
    got = {k: result[k][0, :n] for k in ("boxes", "scores", "labels")}
    figures = compare_detections(expected, got, score_threshold=model.spec.preprocessing.score_threshold,
                                 max_detections=result["scores"].shape[1], tol=Tolerance())
    assert figures["required"] > 0 and figures["recall"] == 1.0, figures
    assert figures["max_box_diff_px"] < 0.1 and figures["max_score_diff"] < 1e-4, figures


def test_repository_configs_parse_and_ensemble_serves(served):
    server, client, model, photos, repo = served
    configs = sorted(repo.glob("*/config.pbtxt"))
    assert {c.parent.name for c in configs} == {BASE, f"{BASE}_onnx", f"{BASE}_python", f"{BASE}_preprocess",
                                                 f"{BASE}_postprocess"}
    for config in configs:
        parsed = validate_config(config.read_text())
        assert parsed.max_batch_size == 8
    onnx_cfg = validate_config((repo / f"{BASE}_onnx" / "config.pbtxt").read_text())
    assert onnx_cfg.platform == "onnxruntime_onnx" and onnx_cfg.dynamic_batching is not None
    photo = photos["astronaut"]
    data = np.array([[_png(photo)]], dtype=object)
    outputs = ("boxes", "scores", "labels", "num_detections")
    expected = _eager(model, photo)

    inp = tritonclient_http.InferInput("image", [1, 1], "BYTES")
    inp.set_data_from_numpy(data)
    http = client.infer(BASE, [inp])
    _check_same({k: http.as_numpy(k) for k in outputs}, expected, model)

    grpc = tritonclient_grpc.InferenceServerClient(server.grpc_url)
    ginp = tritonclient_grpc.InferInput("image", [1, 1], "BYTES")
    ginp.set_data_from_numpy(data)
    res = grpc.infer(BASE, [ginp])
    _check_same({k: res.as_numpy(k) for k in outputs}, expected, model)


def test_concurrent_requests_are_batched(served):
    _, client, _, photos, _ = served
    array = letterbox(photos["coffee"], (SIZE, SIZE))[0][None]
    name = f"{BASE}_python"
    before = client.get_inference_statistics(name)["model_stats"][0]
    inp = tritonclient_http.InferInput("images", list(array.shape), "FP32")
    inp.set_data_from_numpy(array)
    pending = [client.async_infer(name, [inp]) for _ in range(6)]  # in flight together (client concurrency 8)
    results = [p.get_result(timeout=120).as_numpy("scores") for p in pending]
    assert all(np.array_equal(r, results[0]) for r in results)
    after = client.get_inference_statistics(name)["model_stats"][0]
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == 6 and executions < inferences, (inferences, executions)


def test_bad_requests_are_refused(served):
    _, client, _, _, _ = served
    inp = tritonclient_http.InferInput("image", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[b"definitely not a picture"]], dtype=object))
    with pytest.raises(InferenceServerException, match="not a decodable image"):
        client.infer(BASE, [inp])
    wrong = tritonclient_http.InferInput("images", [1, 3, SIZE // 2, SIZE // 2], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 3, SIZE // 2, SIZE // 2), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="unexpected shape"):
        client.infer(f"{BASE}_python", [wrong])
    with pytest.raises(InferenceServerException):
        client.infer("no_such_model", [inp])
