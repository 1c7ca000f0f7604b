"""Detection and segmentation of an uploaded image."""
from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from zoo.vocabulary import DETECTION, SEGMENTATION

from ..backends import Backend, Detections
from ..dependencies import AppState, DetectOptions, Job, admitted, detect_options
from ..errors import WrongTask
from ..openapi import ERRORS, IMAGE_BODY
from ..results import encode_label_map_png, segment_classes, select_detections
from ..schemas import Detection, DetectResponse, ImageSize, ModelRef, SegmentResponse, Timings
from ..state import Inferred, ServerState

router = APIRouter(tags=["inference"])
SegmentFormat = Literal["png", "rle"]


async def segment_format(
    format: Annotated[SegmentFormat, Query(  # noqa: A002  (the query parameter's name)
        description="png: the whole label map as a base64 PNG; rle: one COCO RLE mask per class present.")] = "png",
) -> SegmentFormat:
    """The answer's form of the label map."""
    return format


DetectJob = Annotated[Job[DetectOptions], Depends(admitted(DETECTION, detect_options))]
SegmentJob = Annotated[Job[SegmentFormat], Depends(admitted(SEGMENTATION, segment_format))]


def model_ref(backend: Backend) -> ModelRef:
    return ModelRef(name=backend.info.name, version=backend.info.version, backend=backend.info.backend)


def timings(job: Job, inferred: Inferred) -> Timings:
    outcome = inferred.outcome
    return Timings(decode_ms=round(inferred.decode_ms, 2), queue_ms=round(outcome.queue_s * 1000, 2),
                   inference_ms=round(outcome.inference_s * 1000, 2),
                   total_ms=round((time.perf_counter() - job.started) * 1000, 2))


async def detect_job(state: ServerState, job: Job, options: DetectOptions) -> tuple[Inferred, list[Detection]]:
    """Run an admitted detection request: its decoded image and its detections after the ``options`` filters."""
    inferred = await state.infer(job.served, job.upload, job.started)
    backend = job.served.backend
    result = inferred.outcome.result
    if not isinstance(result, Detections):
        raise WrongTask(f"model {backend.info.name!r} returned no detections")
    image = inferred.image
    threshold = state.config.score_threshold if options.score_threshold is None else options.score_threshold
    detections = select_detections(result, backend.info.categories, width=image.width, height=image.height,
                                   score_threshold=threshold,
                                   max_detections=options.max_detections or backend.info.max_detections,
                                   classes=job.classes)
    return inferred, detections


@router.post("/v1/detect", response_model=DetectResponse, openapi_extra=IMAGE_BODY, responses=ERRORS,
             summary="Detect objects")
async def detect(state: AppState, job: DetectJob) -> DetectResponse:
    inferred, detections = await detect_job(state, job, job.options)
    image = inferred.image
    return DetectResponse(request_id=job.request_id, model=model_ref(job.served.backend),
                          image=ImageSize(width=image.width, height=image.height), detections=detections,
                          timings=timings(job, inferred))


@router.post("/v1/segment", response_model=SegmentResponse, openapi_extra=IMAGE_BODY, responses=ERRORS,
             summary="Segment an image (per-pixel classes)")
async def segment(state: AppState, job: SegmentJob) -> SegmentResponse:
    inferred = await state.infer(job.served, job.upload, job.started)
    info, label_map = job.served.backend.info, inferred.outcome.result
    if isinstance(label_map, Detections):
        raise WrongTask(f"model {info.name!r} returned detections, not a label map")
    classes_out = await run_in_threadpool(segment_classes, label_map, info.categories, offset=info.label_offset,
                                          classes=job.classes, with_rle=job.options == "rle")
    png = await run_in_threadpool(encode_label_map_png, label_map) if job.options == "png" else None
    image = inferred.image
    return SegmentResponse(request_id=job.request_id, model=model_ref(job.served.backend),
                           image=ImageSize(width=image.width, height=image.height), format=job.options,
                           label_map_png=png, classes=classes_out, timings=timings(job, inferred))
