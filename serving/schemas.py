"""Request and response bodies of the HTTP API (published in its OpenAPI document)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ImageSize(BaseModel):
    width: int = Field(description="Width of the uploaded image in pixels (after its EXIF orientation).")
    height: int = Field(description="Height of the uploaded image in pixels (after its EXIF orientation).")


class ModelRef(BaseModel):
    name: str
    version: str
    backend: str


class Timings(BaseModel):
    decode_ms: float = Field(description="Reading and decoding the upload.")
    queue_ms: float = Field(description="Waiting for a batch slot.")
    inference_ms: float = Field(description="The batch this image ran in, end to end on the backend.")
    total_ms: float = Field(description="From the request's arrival to the response.")


class Detection(BaseModel):
    box: tuple[float, float, float, float] = Field(description="x1, y1, x2, y2 in the original image's pixels.")
    score: float
    label: int = Field(description="1..C; names categories[label - 1] of the model (0 is background).")
    name: str


class DetectResponse(BaseModel):
    request_id: str
    model: ModelRef
    image: ImageSize
    detections: list[Detection]
    timings: Timings


class RLE(BaseModel):
    """COCO's uncompressed run-length encoding: runs over the column-major mask, starting with a run of zeros
    (``pycocotools.mask.frPyObjects`` reads it)."""

    size: tuple[int, int] = Field(description="height, width")
    counts: list[int]


class SegmentClass(BaseModel):
    label: int = Field(description="Index in the label map; names categories[label - 1], or categories[label] "
                                   "for models without a background class.")
    name: str
    area: int = Field(description="Pixels with this label.")
    fraction: float = Field(description="area / (width * height).")
    rle: RLE | None = Field(default=None, description="This class's mask, with format=rle.")


class SegmentResponse(BaseModel):
    request_id: str
    model: ModelRef
    image: ImageSize
    format: Literal["png", "rle"]
    label_map_png: str | None = Field(
        default=None, description="With format=png: base64 PNG of the label map at the image's size (8-bit grey, "
                                  "16-bit when a label exceeds 255); pixel value = label.")
    classes: list[SegmentClass]
    timings: Timings


class ModelDescription(BaseModel):
    name: str
    version: str
    task: Literal["detection", "segmentation"]
    arch: str
    backend: str
    precision: str = Field(default="fp32", description="What the model computes in: fp32, bf16 (OpenVINO "
                                                       "--precision bf16) or int8 (a quantized ONNX export).")
    categories: list[str]
    score_threshold: float = Field(description="The model's own floor: requests cannot lower it.")
    max_detections: int
    max_batch_size: int
    ready: bool


class ModelsResponse(BaseModel):
    default: str
    models: list[ModelDescription]


class Status(BaseModel):
    status: str
    detail: str | None = None


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody
    request_id: str
