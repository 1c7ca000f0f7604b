"""The demo page in headless Chromium (Debian's system browser, driven by Playwright): upload a NEON tile and see
the boxes drawn on the canvas. The screenshot is kept as artifacts/serving_demo_page.png."""
from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serving_helpers import encode, uvicorn_server

from serving import ServingConfig, create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the browser comes from "
                                                                   "Debian: apt-get install chromium)")
    if not Path(CHROMIUM).is_file():
        pytest.skip("system Chromium missing: apt-get update && apt-get install -y chromium")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


def test_upload_draws_boxes_on_the_canvas(browser, demo_backend, neon_tile, tmp_path):
    photo = tmp_path / "OSBS_029.png"
    photo.write_bytes(encode(neon_tile, "PNG"))
    app = create_app(ServingConfig(score_threshold=0.3), [demo_backend])
    with uvicorn_server(app) as url:
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(url + "/", timeout=30_000)
        page.wait_for_selector("#model option", state="attached", timeout=30_000)
        assert page.input_value("#model") == "retinanet_lite0_neon_trees"
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("#canvas[data-detections]", state="attached", timeout=60_000)
        count = int(page.get_attribute("#canvas", "data-detections"))
        assert count > 0, page.text_content("#status")
        assert page.locator("#detections li").count() == count
        assert "detections by retinanet_lite0_neon_trees" in page.text_content("#status")
        data_url = page.evaluate("document.getElementById('canvas').toDataURL('image/png')")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "serving_demo_page.png"), full_page=True)
        page.close()
    drawn = np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))
    assert drawn.shape == neon_tile.shape
    assert (drawn != neon_tile).any(axis=2).mean() > 0.01  # the boxes and their names are on the canvas
