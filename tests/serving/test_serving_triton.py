"""``--backend triton`` against a real tritonserver (nvidia-pytriton's, Python backend) holding the repository of
``python -m export.triton``: same detections as the torch backend over HTTP and gRPC; Triton stopped -> 503 with a
clear message; back on the same ports -> served again."""
from __future__ import annotations

import time

import pytest
from serving_helpers import assert_same_detections, encode

from serving import ServingConfig
from serving.backends import create_backend
from serving.backends.triton_backend import TritonBackend
from zoo.registry import get_spec
from zoo.vocabulary import ModelInfo

pytest.importorskip("tritonclient.http", reason="pip install 'tritonclient[all]'")
DEMO = "retinanet_lite0_neon_trees"


@pytest.fixture(scope="module")
def triton_repo(tmp_path_factory):
    import zoo
    from export.triton import build_repository

    repo = tmp_path_factory.mktemp("triton") / "repo"
    return build_repository(zoo.load(DEMO), repo, parity=False, max_batch_size=4)


def start(repo, ports: tuple[int, int] | None = None, monkeypatch=None):
    """A tritonserver on free ports, or on ``ports`` (http, grpc) again: the helper picks its ports with
    ``_free_port``, so the restart hands it the old ones."""
    import triton_utils

    if ports is not None:
        chosen = iter([*ports, triton_utils._free_port()])
        monkeypatch.setattr(triton_utils, "_free_port", lambda: next(chosen))
    return triton_utils.start_or_skip(repo, timeout=120)


def wait_ready(client, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.5)


def test_triton_backend_matches_torch_and_recovers_from_an_outage(triton_repo, serve, demo_client, neon_tile,
                                                                  monkeypatch):
    server = start(triton_repo)
    http_port, grpc_port = (int(url.rsplit(":", 1)[1]) for url in (server.http_url, server.grpc_url))
    http = create_backend(DEMO, ServingConfig(backend="triton", triton_url=server.http_url, request_timeout_s=60))
    grpc = create_backend(DEMO, ServingConfig(backend="triton", triton_url=server.grpc_url, triton_protocol="grpc"))
    data = encode(neon_tile, "PNG")
    expected = demo_client.post("/v1/detect?score_threshold=0.3", content=data).json()["detections"]
    assert len(expected) >= 10
    try:
        with serve(ServingConfig(request_timeout_s=60), [http]) as client:
            wait_ready(client)
            body = client.post("/v1/detect?score_threshold=0.3", content=data).json()
            assert body["model"] == {"name": DEMO, "version": "1", "backend": "triton"}
            assert_same_detections(expected, body["detections"], score_threshold=0.3)
            assert http._graph[0] == "retinanet_lite0_neon_trees_python"  # this server has no ORT backend

            server.stop()
            down = client.post("/v1/detect", content=data)
            assert down.status_code == 503, down.text
            assert down.headers["retry-after"] == "5"
            message = down.json()["error"]["message"]
            assert f"Triton server at {server.http_url} (http) is unavailable" in message
            assert client.get("/readyz").status_code == 503

            server = start(triton_repo, (http_port, grpc_port), monkeypatch)
            wait_ready(client)
            again = client.post("/v1/detect?score_threshold=0.3", content=data)
            assert again.status_code == 200
            assert_same_detections(expected, again.json()["detections"], score_threshold=0.3)
        with serve(ServingConfig(request_timeout_s=60), [grpc]) as client:
            wait_ready(client)
            body = client.post("/v1/detect?score_threshold=0.3", content=data).json()
            assert_same_detections(expected, body["detections"], score_threshold=0.3)
    finally:
        server.stop()


def test_unreachable_triton_at_start_is_not_ready_and_answers_503(serve, photos):
    info = ModelInfo.from_spec(get_spec("retinanet_r50_obj365"), backend="triton")
    backend = TritonBackend(info, url="127.0.0.1:9", protocol="http", timeout_s=5)
    with serve(ServingConfig(), [backend], ready=False) as client:
        response = client.post("/v1/detect", content=encode(photos["chelsea"], "JPEG"))
        assert response.status_code == 503 and "127.0.0.1:9" in response.json()["error"]["message"]
        assert client.get("/readyz").status_code == 503


def test_default_model_on_triton_matches_torch_in_the_ensemble_and_the_backend(tmp_path, serve, default_backend,
                                                                             photos):
    """yolox_nano_coco letterboxes with grey 114: the Triton preprocessing model and the serving backend both pad
    with the export's value, so every path gives the torch backend's detections."""
    import numpy as np
    import tritonclient.http as tritonclient_http

    import zoo
    from export.triton import build_repository

    name = zoo.DEFAULT_MODEL
    repo = build_repository(zoo.load(name), tmp_path / "repo", parity=False, max_batch_size=4)
    assert 'key: "pad_value"' in (repo / f"{name}_preprocess" / "config.pbtxt").read_text()
    data = encode(photos["coffee"], "PNG")  # not square: a third of the canvas is padding
    with serve(ServingConfig(), [default_backend]) as client:
        expected = client.post("/v1/detect?score_threshold=0.05", content=data).json()["detections"]
    assert expected[0]["name"] == "cup"
    server = start(repo)
    try:
        backend = create_backend(name, ServingConfig(backend="triton", triton_url=server.http_url,
                                                     request_timeout_s=60))
        with serve(ServingConfig(request_timeout_s=60), [backend]) as client:
            wait_ready(client)
            body = client.post("/v1/detect?score_threshold=0.05", content=data).json()
        assert_same_detections(expected, body["detections"], score_threshold=0.05)

        ensemble = tritonclient_http.InferenceServerClient(server.http_url)
        inp = tritonclient_http.InferInput("image", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[data]], dtype=object))
        result = ensemble.infer(name, [inp])
        n = int(result.as_numpy("num_detections").reshape(-1)[0])
        got = [{"box": b.tolist(), "score": float(s), "label": int(label)} for b, s, label in
               zip(result.as_numpy("boxes")[0, :n], result.as_numpy("scores")[0, :n], result.as_numpy("labels")[0, :n])]
        assert_same_detections(expected, [d for d in got if d["score"] >= 0.05], score_threshold=0.05)
    finally:
        server.stop()
