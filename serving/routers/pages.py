"""The demo page, the API docs (Swagger UI and ReDoc from the fastapi-offline package: /docs works offline), and the
static files they load."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parents[1] / "static"
DOCS_ASSETS = "/static/docs"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def demo_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root, app = request.scope.get("root_path", ""), request.app
    return get_swagger_ui_html(openapi_url=root + app.openapi_url, title=f"{app.title} - Swagger UI",
                               swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
                               swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
                               swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png")


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    root, app = request.scope.get("root_path", ""), request.app
    page = get_redoc_html(openapi_url=root + app.openapi_url, title=f"{app.title} - ReDoc",
                          redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
                          redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png", with_google_fonts=False)
    page.headers["Content-Security-Policy"] = "img-src 'self' data:"  # not ReDoc's attribution logo from its CDN
    return page


def mount_static(app: FastAPI) -> None:
    """The docs' assets (mounted first: their path is inside /static) and the demo page's files."""
    app.mount(DOCS_ASSETS, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
