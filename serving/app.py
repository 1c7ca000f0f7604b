"""The FastAPI application: its state, its routers, its error answers and its request middleware."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .answers import add_error_handlers
from .backends import Backend
from .config import ServingConfig
from .middleware import RequestContext
from .routers import inference, models, ops, pages, visualize
from .state import ServerState

log = logging.getLogger("serving")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load and warm up the models in the background (``/readyz`` tells when they are ready); on shutdown, drain
    the batchers and close the backends."""
    state: ServerState = app.state.serving
    loader = asyncio.create_task(state.load())
    try:
        yield
    finally:
        if not loader.done():
            loader.cancel()
        await asyncio.gather(loader, return_exceptions=True)
        await state.close()
        log.info("stopped")


def create_app(config: ServingConfig | None = None, backends: Sequence[Backend] | None = None) -> FastAPI:
    """The service. ``backends`` (already built) replace loading ``config.models`` with ``config.backend``."""
    app = FastAPI(
        title="objects365-zoo serving",
        version="1",
        description="Object detection and semantic segmentation with Objects365-pretrained models. Send an image "
                    "(JPEG, PNG, WebP) as the raw body or as a multipart file field `file`.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    state = ServerState(config or ServingConfig(), backends)
    app.state.serving = state
    add_error_handlers(app)
    routers = (inference.router, visualize.router, models.router, ops.router, pages.router)
    for router in routers:
        app.include_router(router)
    pages.mount_static(app)
    # the metrics' endpoint labels: every route's path (an included router's routes are its own, not the app's)
    paths = {r.path for r in (*app.routes, *(r for router in routers for r in router.routes)) if hasattr(r, "path")}
    app.add_middleware(RequestContext, state=state, paths=paths)
    return app
