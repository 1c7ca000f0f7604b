"""Every snippet of the README runs as written, so the README cannot rot.

Each fenced block follows a marker ``<!-- readme-test: KIND -->``:
- ``run``: run in a folder holding ``photo.jpg`` and a small COCO dataset in ``data/`` (bash with ``-e``, or Python);
- ``serve``: a bash block that starts a server in the background and asks it with curl: run, the answer checked,
  the server stopped;
- ``network``: needs the internet (Objects365 checkpoints, ImageNet weights): checked for syntax, and every zoo model
  and recipe it names must exist;
- ``setup``: the two set-up commands of a fresh machine (CI runs the test command; tests/serving/test_serving_cli.py
  runs the served default).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_detection_data import write_coco

import zoo

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BLOCK = re.compile(r"(?:<!-- readme-test: (?P<kind>\w+) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)
KINDS = ("run", "serve", "network", "setup")


def blocks() -> list[tuple[str, str, str]]:
    return [(m["kind"] or "", m["lang"], m["body"]) for m in BLOCK.finditer(README.read_text())]


def test_every_block_says_how_it_is_checked():
    found = blocks()
    assert found and all(kind in KINDS for kind, _, _ in found), [b for b in found if b[0] not in KINDS]
    setup = [body.strip() for kind, _, body in found if kind == "setup"]
    assert setup == ['python3 -m venv .venv && .venv/bin/pip install -e ".[serving]" && .venv/bin/zoo serve',
                     "bash scripts/test.sh"]


def test_network_blocks_name_real_models_and_recipes():
    from training.recipes import RECIPES

    for kind, lang, body in blocks():
        if kind != "network":
            continue
        assert lang == "bash"
        subprocess.run(["bash", "-n", "-c", body], check=True)
        for name in re.findall(r"(?:--init|python -m export|zoo\.load\(\")\s*\"?([a-z0-9_]+)", body):
            zoo.get_spec(name)
        for recipe in re.findall(r"training train (\w+)", body):
            assert recipe in RECIPES


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("readme")
    Image.fromarray(data.astronaut()).save(folder / "photo.jpg", quality=90)
    write_coco(folder / "data")
    return folder


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("home")
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(home), "O365ZOO_CACHE": str(home / "cache"), "O365ZOO_REGISTRY": str(home / "registry.json"),
            "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}


def _run(kind: str, lang: str, body: str, workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    if lang == "python":
        command = [sys.executable, "-c", body]
    elif kind == "serve":  # stop the background server however the block ends
        command = ["bash", "-c", "set -e\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + body]
    else:
        command = ["bash", "-e", "-o", "pipefail", "-c", body]
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, check=False, timeout=900)


@pytest.mark.slow
def test_run_and_serve_blocks_work_as_written(workdir, env):
    runnable = [(k, lang, body) for k, lang, body in blocks() if k in ("run", "serve")]
    assert len(runnable) >= 8
    for kind, lang, body in runnable:
        done = _run(kind, lang, body, workdir, env)
        assert done.returncode == 0, f"README block failed:\n{body}\nstdout:\n{done.stdout[-3000:]}\n" \
                                     f"stderr:\n{done.stderr[-3000:]}"
        if kind == "serve":  # the last line of output is the service's JSON answer about the photo
            answer = json.loads(done.stdout.strip().splitlines()[-1])
            assert answer["detections"] and answer["detections"][0]["name"] == "person", answer
        if "zoo.detect" in body:
            assert "person" in done.stdout.split()
    assert (workdir / "annotated" / "photo.jpg").is_file()
    assert (workdir / "exports" / "yolox" / "model.onnx").is_file()
    registry = json.loads(Path(env["O365ZOO_REGISTRY"]).read_text())
    assert "my_model" in registry["models"]
