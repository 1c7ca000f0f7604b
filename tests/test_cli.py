"""The `zoo` command line on the shipped demo model: predict draws boxes, download resolves the packaged weights."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import zoo


@pytest.fixture(scope="module")
def tile():
    from training.demo_data import ensure_demo_data

    try:
        return ensure_demo_data().image("OSBS_029")
    except RuntimeError as exc:
        pytest.skip(f"deepforest wheel unavailable: {exc}")


def _zoo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"})


def test_predict_prints_detections_and_draws_them(tile, tmp_path):
    out = tmp_path / "vis.png"
    proc = _zoo("predict", "retinanet_lite0_neon_trees", str(tile), "--out", str(out), "--score-threshold", "0.4")
    assert proc.returncode == 0, proc.stderr
    lines = [line.split() for line in proc.stdout.splitlines()]
    assert len(lines) >= 10 and all(parts[0] == "tree" and float(parts[1]) >= 0.4 for parts in lines)
    drawn, original = Image.open(out).convert("RGB"), Image.open(tile).convert("RGB")
    assert drawn.size == original.size and drawn.tobytes() != original.tobytes()


def test_download_of_packaged_weights_verifies_them():
    proc = _zoo("download", "retinanet_lite0_neon_trees")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == zoo.get_spec("retinanet_lite0_neon_trees").source


def test_download_of_unpublished_model_says_how_to_make_it():
    proc = _zoo("download", "fpn_r50_obj365_coco")
    assert proc.returncode == 1 and "python -m training train coco_finetune_paper" in proc.stderr


def test_cards_check_passes_on_the_committed_cards():
    cards = Path(__file__).resolve().parents[1] / "model_cards"
    assert _zoo("cards", "--check", "--out", str(cards)).returncode == 0
