"""Fixtures of the serving tests: real photos, the demo model on the torch backend, a client that waits for ready."""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from serving_helpers import running

from serving import ServingConfig
from serving.backends import model_info
from serving.backends.torch_backend import TorchBackend

DEMO_MODEL = "retinanet_lite0_neon_trees"
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(1, str(REPO / "tests"))  # tests/triton_utils.py (the export engineer's tritonserver helper)


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """Tests that run the serving CLI in-process make it point the root logger at that test's captured stderr;
    restore the handlers after each test, or later tests log to a closed stream ("--- Logging error ---")."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Real photos (scikit-image's public-domain samples), shrunk to at most 320 px, as RGB arrays."""
    data = pytest.importorskip("skimage.data", reason="scikit-image (pip install scikit-image) provides the photos")
    out = {}
    for name in ("astronaut", "coffee", "chelsea"):
        image = Image.fromarray(getattr(data, name)())
        image.thumbnail((320, 320))
        out[name] = np.asarray(image.convert("RGB"))
    return out


@pytest.fixture(scope="session")
def neon_tile() -> np.ndarray:
    """A 400x400 NEON aerial tile with tree crowns (deepforest's OSBS_029, fetched once by training.demo_data)."""
    from training.demo_data import ensure_demo_data

    try:
        path = ensure_demo_data().image("OSBS_029")
    except RuntimeError as exc:  # offline and nothing cached
        pytest.skip(f"NEON tile unavailable ({exc}); run `python -m training.demo_data` once online")
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="session")
def demo_backend() -> TorchBackend:
    """The shipped demo model (weights from zoo/weights) on the in-process torch backend."""
    import zoo

    torch.set_num_threads(2)
    if DEMO_MODEL not in zoo.list_models():
        pytest.skip(f"{DEMO_MODEL} is not in the zoo registry (its weights ship in zoo/weights)")
    model = zoo.load(DEMO_MODEL)
    return TorchBackend(model, model_info(model, "torch"), max_batch_size=4)


@pytest.fixture(scope="session")
def default_backend() -> TorchBackend:
    """The embedded default (yolox_nano_coco, weights in zoo/weights) on the in-process torch backend."""
    import zoo

    torch.set_num_threads(2)
    model = zoo.load(zoo.DEFAULT_MODEL)
    return TorchBackend(model, model_info(model, "torch"), max_batch_size=4)


@pytest.fixture(scope="module")
def demo_client(demo_backend) -> Iterator[TestClient]:
    with running(ServingConfig(score_threshold=0.3), [demo_backend]) as client:
        yield client


@pytest.fixture(scope="session")
def serve() -> Callable[..., Iterator[TestClient]]:
    """``with serve(config, backends) as client:`` an in-process server, ready."""
    return running
