"""Detections drawn on the uploaded image, or compared with ground truth posted beside it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from zoo.vocabulary import DETECTION

from ..dependencies import AppState, DetectOptions, Job, admitted, detect_options
from ..errors import BadParameter
from ..openapi import ERRORS, image_body
from ..results import LabelLookup
from ..schemas import GroundTruth
from ..visualize import draw_compared, draw_detections
from .inference import detect_job

router = APIRouter(tags=["inference"])
GROUND_TRUTH_FIELD = "ground_truth"


@dataclass(frozen=True)
class VisualizeOptions:
    detect: DetectOptions
    format: Literal["png", "jpeg"]
    iou_threshold: float


async def visualize_options(
    detect: Annotated[DetectOptions, Depends(detect_options)],
    format: Annotated[Literal["png", "jpeg"], Query(  # noqa: A002  (the query parameter's name)
        description="Encoding of the drawn image.")] = "png",
    iou_threshold: Annotated[float, Query(gt=0.0, le=1.0, allow_inf_nan=False, description=(
        "With ground truth: a detection matches a box of its class at this IoU or more (COCO's greedy matching "
        "by score)."))] = 0.5,
) -> VisualizeOptions:
    return VisualizeOptions(detect, format, iou_threshold)


VisualizeJob = Annotated[Job[VisualizeOptions], Depends(admitted(DETECTION, visualize_options))]
_GROUND_TRUTH_SCHEMA = {
    "type": "string", "contentMediaType": "application/json",
    "description": "Optional ground truth as JSON, e.g. `{\"boxes\": [[10, 20, 100, 50]], \"labels\": [\"person\"]}`"
                   ": boxes [x, y, width, height] (COCO; or `\"box_format\": \"xyxy\"` for corners) in the image's "
                   "pixels, labels as class names or numbers. The picture then shows matched ground truth green, "
                   "matched detections light blue, false negatives red and false positives blue (the Objects365 "
                   "paper's Fig. 9).",
}


def ground_truth(text: str, lookup: LabelLookup) -> tuple[list[tuple[float, float, float, float]], list[int]]:
    """The posted ground truth's boxes (xyxy) and labels; anything wrong in it: 422 naming the form field."""
    try:
        truth = GroundTruth.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        raise BadParameter(f"{GROUND_TRUTH_FIELD}: {problems}") from None
    try:
        labels = [lookup(str(label)) for label in truth.labels]
    except BadParameter as exc:
        raise BadParameter(f"{GROUND_TRUTH_FIELD}: {exc.message}") from None
    return truth.xyxy(), labels


@router.post("/v1/detect:visualize", openapi_extra=image_body(**{GROUND_TRUTH_FIELD: _GROUND_TRUTH_SCHEMA}),
             summary="Detect objects and draw them (compared with ground truth when posted)", response_class=Response,
             responses={**ERRORS, 200: {"content": {"image/png": {}, "image/jpeg": {}},
                                        "description": "The image with boxes and names drawn. With ground truth, "
                                                       "a legend strip below it and the counts in X-True-Positives, "
                                                       "X-False-Positives and X-False-Negatives."}})
async def detect_visualize(state: AppState, job: VisualizeJob) -> Response:
    options, info = job.options, job.served.backend.info
    text = job.upload.fields.get(GROUND_TRUTH_FIELD)
    truth = ground_truth(text, LabelLookup(info.categories, info.label_offset)) if text is not None else None
    inferred, detections = await detect_job(state, job, options.detect)
    fmt, pixels = options.format.upper(), inferred.image.pixels
    headers = {"X-Detections": str(len(detections))}
    if truth is None:
        content = await run_in_threadpool(draw_detections, pixels, detections, fmt)
    else:
        content, comparison = await run_in_threadpool(draw_compared, pixels, detections, *truth,
                                                      categories=info.categories,
                                                      iou_threshold=options.iou_threshold, image_format=fmt)
        headers |= {"X-True-Positives": str(comparison.tp), "X-False-Positives": str(comparison.fp),
                    "X-False-Negatives": str(comparison.fn)}
    return Response(content, media_type=f"image/{options.format}", headers=headers)
