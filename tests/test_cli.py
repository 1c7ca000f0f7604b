"""The `zoo` command line on the shipped models: predict draws boxes, download resolves the packaged weights."""
from __future__ import annotations

import json
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
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, check=False,
                          timeout=300, env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"})


def test_predict_prints_detections_and_draws_them(tile, tmp_path):
    out = tmp_path / "vis"
    proc = _zoo("predict", "retinanet_lite0_neon_trees", str(tile), "--out", str(out), "--score-threshold", "0.4")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert header.startswith(f"{tile} (400x400): ")
    lines = [line.split() for line in rows]
    assert len(lines) >= 10 and all(parts[0] == "tree" and float(parts[1]) >= 0.4 for parts in lines)
    drawn, original = Image.open(out / f"{Path(tile).stem}.jpg").convert("RGB"), Image.open(tile).convert("RGB")
    assert drawn.size == original.size


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    data = pytest.importorskip("skimage.data")
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(data.coffee()).save(folder / "coffee.jpg")
    Image.fromarray(data.chelsea()).save(folder / "chelsea.jpg")
    (folder / "notes.jpg").write_bytes(b"not an image")
    return folder


def test_predict_defaults_to_the_embedded_model_on_folders_and_globs(photo_dir, tmp_path):
    proc = _zoo("predict", str(photo_dir), "--out", str(tmp_path / "vis"), "--no-labels")
    assert proc.returncode == 0, proc.stderr
    assert f"{photo_dir / 'notes.jpg'}: not a readable image" in proc.stderr  # one line, the rest goes on
    assert "Traceback" not in proc.stderr
    blocks = {line.split(" (")[0]: line for line in proc.stdout.splitlines() if not line.startswith(" ")}
    assert set(blocks) == {str(photo_dir / n) for n in ("astronaut.png", "chelsea.jpg", "coffee.jpg")}
    table = proc.stdout
    assert "person" in table and "cat" in table and "cup" in table
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"]

    proc = _zoo("predict", str(photo_dir / "*.jpg"), "--json", "--classes", "cup,dining table",
                "--score-threshold", "0.5")
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [Path(r["image"]).name for r in records] == ["chelsea.jpg", "coffee.jpg"]
    assert records[0]["detections"] == []  # the cat is filtered out
    assert {d["name"] for d in records[1]["detections"]} == {"cup", "dining table"}
    assert all(d["score"] >= 0.5 and len(d["box"]) == 4 for d in records[1]["detections"])


@pytest.mark.parametrize(("args", "message"), [
    (("/nonexistent/photo.jpg",), "image not found: /nonexistent/photo.jpg"),
    (("--classes", "cupp", "IMAGE"), "did you mean cup?"),
    (("--model", "yolox_nano_cocoo", "IMAGE"), "did you mean yolox_nano_coco"),
])
def test_predict_errors_are_one_line(photo_dir, args, message):
    args = [str(photo_dir / "coffee.jpg") if a == "IMAGE" else a for a in args]
    proc = _zoo("predict", *args)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


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
