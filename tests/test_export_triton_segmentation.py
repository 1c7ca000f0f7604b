"""A segmentation repository served by a real tritonserver (nvidia-pytriton's, Python backend only): the ensemble
takes photo bytes of any size and answers a PNG label map at the photo's size that equals in-process PyTorch on
the same letterboxed input, over HTTP and gRPC, for photos of two sizes batched in one request."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

tritonclient_http = pytest.importorskip("tritonclient.http")
tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
pytest.importorskip("skimage")

from export_helpers import tiny_model  # noqa: E402
from triton_utils import start_or_skip  # noqa: E402

from export.parity import sample_photos  # noqa: E402
from export.triton import build_repository, triton_name  # noqa: E402
from zoo.letterbox import labels_to_photo, letterbox  # noqa: E402

SIZE = 128


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    torch.set_num_threads(2)
    photos = sample_photos(("astronaut", "coffee"))
    model = tiny_model("pspnet", SIZE)
    repo = build_repository(model, tmp_path_factory.mktemp("triton_seg") / "repo", photos=photos, max_batch_size=4)
    server = start_or_skip(repo)
    try:
        yield server, model, photos, triton_name(model.spec.name)
    finally:
        server.stop()


def _eager_labels(model, photo: Image.Image) -> np.ndarray:
    array, scale = letterbox(photo, (SIZE, SIZE))
    with torch.inference_mode():
        labels = model(torch.from_numpy(array)[None])["out"][0].argmax(0).numpy()
    return labels_to_photo(labels, scale, (photo.height, photo.width))


def _png(photo: Image.Image) -> bytes:
    buffer = io.BytesIO()
    photo.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_ensemble_answers_label_maps_at_photo_size(served, protocol):
    server, model, photos, name = served
    module = tritonclient_http if protocol == "http" else tritonclient_grpc
    client = module.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    chosen = [photos["astronaut"], photos["coffee"]]  # 512x512 and 400x600: one request, two sizes
    data = np.array([[_png(p)] for p in chosen], dtype=object)
    inp = module.InferInput("image", [len(chosen), 1], "BYTES")
    inp.set_data_from_numpy(data)
    maps = client.infer(name, [inp]).as_numpy("label_map")
    assert maps.shape == (len(chosen), 1)
    for photo, png in zip(chosen, maps[:, 0]):
        served_map = np.asarray(Image.open(io.BytesIO(png)))
        expected = _eager_labels(model, photo)
        assert served_map.shape == (photo.height, photo.width)
        assert (served_map == expected).mean() >= 0.999
