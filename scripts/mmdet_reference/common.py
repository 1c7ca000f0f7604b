"""What the MMDetection reference run and the fidelity tests share (NumPy, torch and Pillow only; no mmdet, no zoo).

- the photos: scikit-image's astronaut, chelsea, coffee, stereo motorcycle (left) and matplotlib's grace_hopper, RGB
  uint8, with a digest so that a changed decoder is noticed;
- the shared input: each photo resized to MMDetection's size by nearest neighbour in NumPy, identically in any
  environment; at that size both sides' own resize is a copy, so both networks see the same tensor;
- the weights: an MMDetection state dict from a seed and a recipe (per tensor ``offset + scale * N(0, 1)`` from its
  own ``RandomState``, BatchNorm statistics given explicitly), so that the tests rebuild the checkpoint the reference
  recorded without storing it; its digest proves it is the same.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "mmdet"
RECIPE_FILE = FIXTURES / "recipe.json"
BN_STATS_FILE = FIXTURES / "bn_stats.npz"
OUTPUTS_FILE = FIXTURES / "outputs.npz"
PHOTOS = ("astronaut", "chelsea", "coffee", "motorcycle", "grace_hopper")
# registry entry <- MMDetection 3.3.0 config (mmdet/.mim/configs/objects365/)
MODELS = {
    "fpn_r50_obj365v1_1x": "faster-rcnn_r50_fpn_16xb4-1x_objects365v1.py",
    "retinanet_r50_obj365v1_1x": "retinanet_r50_fpn_1x_objects365v1.py",
}
SAMPLES = 4096  # resized pixels per photo whose MMDetection values are stored


def photos() -> dict[str, np.ndarray]:
    """The five photos as RGB uint8 ``[H, W, 3]`` (needs scikit-image and matplotlib)."""
    from matplotlib import cbook
    from skimage import data

    out = {name: np.asarray(getattr(data, name)()) for name in ("astronaut", "chelsea", "coffee")}
    out["motorcycle"] = np.asarray(data.stereo_motorcycle()[0])
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        out["grace_hopper"] = np.asarray(Image.open(f).convert("RGB"))
    return {name: np.array(out[name]) for name in PHOTOS}


def array_digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def nearest_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image [H, W, C]`` resized to ``size = (h, w)`` by nearest neighbour at half-pixel centres."""
    rows = np.minimum(((np.arange(size[0]) + 0.5) * image.shape[0] / size[0]).astype(np.int64), image.shape[0] - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * image.shape[1] / size[1]).astype(np.int64), image.shape[1] - 1)
    return np.ascontiguousarray(image[rows][:, cols])


def sample_positions(size: tuple[int, int], count: int = SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """``count`` fixed pseudo-random ``(rows, cols)`` of a ``size = (h, w)`` image."""
    rng = np.random.RandomState(size[0] * 100_003 + size[1])
    return rng.randint(0, size[0], count), rng.randint(0, size[1], count)


def default_recipe(shapes: dict[str, tuple[int, ...]]) -> dict[str, dict]:
    """He-normal convolutions and linear layers, zero biases, BatchNorm scale ``1 + 0.1 N`` and shift ``0.1 N``;
    running statistics 0 and 1 until calibrated. ``shapes``: an MMDetection state dict's names and shapes."""
    norms = {k.rsplit(".", 1)[0] for k in shapes if k.endswith("running_mean")}
    recipe: dict[str, dict] = {}
    for key, shape in shapes.items():
        prefix, leaf = key.rsplit(".", 1)
        if prefix in norms:
            offset, scale = {"weight": (1.0, 0.1), "bias": (0.0, 0.1), "running_mean": (0.0, 0.0),
                             "running_var": (1.0, 0.0), "num_batches_tracked": (0.0, 0.0)}[leaf]
        elif leaf == "weight":
            offset, scale = 0.0, float(np.sqrt(2.0 / np.prod(shape[1:])))
        else:
            offset, scale = 0.0, 0.0
        recipe[key] = {"shape": list(shape), "offset": offset, "scale": scale}
    return recipe


def generate_state_dict(recipe: dict[str, dict], seed: int, stats: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The state dict of ``recipe``: ``offset + scale * N(0, 1)`` (float64, then float32) from a ``RandomState``
    seeded by ``seed`` and the name (so that equal names get equal values across models), or the array in
    ``stats`` (BatchNorm statistics) under the same name; ``num_batches_tracked`` is int64 zero."""
    out: dict[str, torch.Tensor] = {}
    for key, item in recipe.items():
        shape = tuple(item["shape"])
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros(shape, dtype=torch.int64)
            continue
        if key in stats:
            value = np.asarray(stats[key], dtype=np.float64).reshape(shape)
        else:
            value = np.full(shape, item["offset"], dtype=np.float64)
            if item["scale"]:
                rng = np.random.RandomState(zlib.crc32(f"{seed}:{key}".encode()))
                value += item["scale"] * rng.standard_normal(shape)
        out[key] = torch.from_numpy(value.astype(np.float32))
    return out


def state_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 of the names, dtypes, shapes and bytes (independent of the file format)."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        value = state_dict[key].contiguous()
        h.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        h.update(value.numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(state_dict: dict[str, torch.Tensor], classes: list[str], path: Path) -> Path:
    """An MMDetection 3.x checkpoint file: ``{"meta": {"dataset_meta": {"classes"}}, "state_dict"}``."""
    torch.save({"meta": {"dataset_meta": {"classes": tuple(classes)}}, "state_dict": state_dict}, path)
    return path


def load_reference() -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(recipe file, BatchNorm statistics as float32, recorded outputs)`` from the fixtures."""
    recipe = json.loads(RECIPE_FILE.read_text())
    with np.load(BN_STATS_FILE) as f:
        stats = {k: f[k].astype(np.float32) for k in f.files}
    with np.load(OUTPUTS_FILE) as f:
        outputs = {k: f[k] for k in f.files}
    return recipe, stats, outputs


def reference_state_dict(recipe_file: dict, stats: dict[str, np.ndarray], model: str) -> dict[str, torch.Tensor]:
    """The recorded checkpoint's state dict of registry entry ``model``, rebuilt from the fixtures."""
    entry = recipe_file["models"][model]
    return generate_state_dict(entry["recipe"], recipe_file["seed"], stats)
