"""The demo page in headless Chromium (Debian's system browser, driven by Playwright) on the embedded default model:
a sample photo and an uploaded photo get their boxes and names drawn, an error replaces the last result, the score
slider re-asks, and the page fits a 390 px phone screen. Screenshots are kept in artifacts/."""
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


@pytest.fixture(scope="module")
def page_url(default_backend):
    app = create_app(ServingConfig(score_threshold=0.3), [default_backend])
    with uvicorn_server(app) as url:
        yield url


def _wait_for_result(page, previous: str | None = None) -> list[str]:
    """Names of the listed detections once the status reports a finished request."""
    page.wait_for_function("(prev) => { const s = document.getElementById('status').textContent;"
                           " return s !== prev && (s.includes('detections by') || s.startsWith('Could not')); }",
                           arg=previous, timeout=60_000)
    return [t.split(" [")[0].rsplit(" ", 1)[0] for t in page.locator("#detections li").all_text_contents()]


def test_sample_upload_slider_and_error(browser, page_url, photos, tmp_path):
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    page.goto(page_url + "/", timeout=30_000)
    page.wait_for_selector("#model option", state="attached", timeout=30_000)
    assert page.input_value("#model") == "yolox_nano_coco"
    assert "80 classes" in page.text_content("#about") and "person" in page.text_content("#about")

    page.click("button[data-sample='/static/samples/cat.jpg']")
    names = _wait_for_result(page)
    assert names[:1] == ["cat"], page.text_content("#status")
    assert "detections by yolox_nano_coco" in page.text_content("#status")

    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(encode(photos["astronaut"], "JPEG"))
    before = page.text_content("#status")
    page.set_input_files("#file", str(photo))
    names = _wait_for_result(page, before)
    assert "person" in names
    count = int(page.get_attribute("#canvas", "data-detections"))
    assert count == len(names)
    data_url = page.evaluate("document.getElementById('canvas').toDataURL('image/png')")
    drawn = np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))
    assert drawn.shape == photos["astronaut"].shape
    assert (drawn != photos["astronaut"]).any(axis=2).mean() > 0.005  # boxes and names are on the canvas
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serving_demo_page.png"), full_page=True)

    before = page.text_content("#status")
    page.fill("#threshold", "0.05")
    page.dispatch_event("#threshold", "change")
    _wait_for_result(page, before)
    assert page.text_content("#threshold-value") == "0.05"
    assert int(page.get_attribute("#canvas", "data-detections")) > count  # the lower bar shows more

    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not an image")
    before = page.text_content("#status")
    page.set_input_files("#file", str(bad))
    _wait_for_result(page, before)
    assert page.get_attribute("#status", "class") == "error"
    assert "notes.png" in page.text_content("#status")
    assert page.locator("#detections li").count() == 0 and page.get_attribute("#canvas", "data-detections") is None
    page.close()


def test_readable_on_a_phone(browser, page_url):
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    page.goto(page_url + "/", timeout=30_000)
    page.wait_for_selector("#model option", state="attached", timeout=30_000)
    page.click("button[data-sample='/static/samples/astronaut.jpg']")
    assert "person" in _wait_for_result(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the screen
    box = page.locator("#canvas").bounding_box()
    assert box["width"] <= 390 and box["height"] > 100
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serving_demo_page_phone.png"), full_page=True)
    page.close()
