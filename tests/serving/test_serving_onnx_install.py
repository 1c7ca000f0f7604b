"""The torch-free install: ``pip install -e ".[serving-onnx]"`` in its own virtualenv (scripts/test.sh makes it and
names its python in ``O365ZOO_ONNX_VENV``) has no torch, and ``zoo serve --backend onnxruntime`` there answers a real
photo with the torch backend's detections, from the ONNX export that ships in the package."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

import zoo
from zoo.specs import PACKAGED_EXPORTS, packaged_export

VENV_PYTHON = os.environ.get("O365ZOO_ONNX_VENV")


def test_packaged_export_matches_its_recorded_sha256_and_metadata():
    from export.artifact import read_metadata

    for (name, side), (folder, _) in PACKAGED_EXPORTS.items():
        assert packaged_export(name, side) == folder
        meta = read_metadata(folder)
        assert meta["model"] == name and meta["input"]["shape"][2:] == [side, side]
        assert meta["source_sha256"] == zoo.get_spec(name).sha256 and meta["parity"]["passed"]


@pytest.mark.skipif(not VENV_PYTHON, reason="needs the serving-onnx virtualenv that scripts/test.sh builds")
def test_torch_free_install_serves_the_default_model(tmp_path, default_backend, photos):
    from serving_helpers import assert_same_detections, encode, running

    from serving import ServingConfig

    python = Path(VENV_PYTHON)
    probe = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True,
                           check=False)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "O365ZOO_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen([str(python.parent / "zoo"), "serve", "--backend", "onnxruntime", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    data = encode(photos["coffee"], "JPEG")
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server not ready in 120 s"
            time.sleep(0.3)
        body = httpx.post(f"{url}/v1/detect?score_threshold=0.05", content=data, timeout=60).json()
        cup = body["detections"][0]
        truth = json.dumps({"boxes": [cup["box"]], "labels": [cup["name"]], "box_format": "xyxy"})
        drawn = httpx.post(f"{url}/v1/detect:visualize", files={"file": ("coffee.jpg", data, "image/jpeg")},
                           data={"ground_truth": truth}, timeout=60)  # zoo.visualize's comparison, torch-free
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert body["model"]["backend"] == "onnxruntime" and body["detections"][0]["name"] == "cup"
    assert drawn.status_code == 200 and drawn.headers["x-true-positives"] == "1", drawn.text[:300]
    with running(ServingConfig(), [default_backend]) as client:
        expected = client.post("/v1/detect?score_threshold=0.05", content=data).json()["detections"]
    assert_same_detections(expected, body["detections"], score_threshold=0.05)

