"""/docs (Swagger UI) and /redoc (ReDoc) in headless Chromium with every request off 127.0.0.1 refused: their
scripts and styles come from the server itself (the fastapi-offline package), so both render offline."""
from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from serving_helpers import uvicorn_server
from test_serving_demo_page import browser  # noqa: F401  (the system Chromium, a fixture)

from serving import ServingConfig, create_app


@pytest.fixture(scope="module")
def docs_url(default_backend):
    with uvicorn_server(create_app(ServingConfig(), [default_backend])) as url:
        yield url


@pytest.fixture
def offline_page(browser):  # noqa: F811
    """A page whose requests to any host but 127.0.0.1 are aborted; ``page.blocked`` lists them."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.blocked = []

    def route(r):
        if urlsplit(r.request.url).hostname == "127.0.0.1":
            r.continue_()
        else:
            page.blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    yield page
    page.close()


def test_swagger_ui_lists_the_operations(offline_page, docs_url):
    page = offline_page
    page.goto(docs_url + "/docs", timeout=30_000)
    block = page.locator(".opblock", has_text="/v1/detect").first
    block.wait_for(timeout=30_000)
    assert "Detect objects" in block.text_content()
    paths = page.locator(".opblock-summary-path").all_text_contents()
    assert {"/v1/detect", "/v1/segment", "/v1/models", "/healthz"} <= {p.strip() for p in paths}
    assert page.blocked == []


def test_redoc_renders(offline_page, docs_url):
    page = offline_page
    page.goto(docs_url + "/redoc", timeout=30_000)
    page.get_by_role("heading", name="Detect objects").first.wait_for(timeout=60_000)
    assert "objects365-zoo serving" in page.locator("h1").first.text_content()
    assert "/v1/detect" in page.content()
    assert page.blocked == []
