"""The served models."""
from __future__ import annotations

from fastapi import APIRouter

from ..dependencies import AppState
from ..schemas import ModelDescription, ModelsResponse

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelsResponse, summary="Served models")
async def models(state: AppState) -> ModelsResponse:
    return ModelsResponse(default=state.default, models=[
        ModelDescription(name=b.info.name, version=b.info.version, task=b.info.task, arch=b.info.arch,
                         backend=b.info.backend, precision=b.info.precision, categories=list(b.info.categories),
                         score_threshold=b.info.score_threshold, max_detections=b.info.max_detections,
                         max_batch_size=state.batchers[n].max_batch_size, ready=state.ready)
        for n, b in state.backends.items()
    ])
