"""Request and response bodies of the HTTP API (published in its OpenAPI document)."""
from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from zoo.vocabulary import FP32, Task


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
    task: Task
    arch: str
    backend: str
    precision: str = Field(default=FP32, description="What the model computes in: fp32, bf16 (OpenVINO "
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


class GroundTruth(BaseModel):
    """The ``ground_truth`` form field of ``POST /v1/detect:visualize``: one box and one class per object."""

    model_config = ConfigDict(extra="forbid")

    boxes: list[tuple[float, float, float, float]] = Field(
        description="One box per object, in the image's pixels: [x, y, width, height] as COCO annotations "
                    "(box_format xywh, the default) or [x1, y1, x2, y2] (box_format xyxy).", max_length=10_000)
    labels: list[int | str] = Field(description="One class per box: a name of the model's categories "
                                                "(case-insensitive) or its label number (GET /v1/models).",
                                    max_length=10_000)
    box_format: Literal["xywh", "xyxy"] = Field(default="xywh", description="xywh: COCO's [x, y, width, height]; "
                                                                            "xyxy: corners.")

    @model_validator(mode="after")
    def _one_label_per_box(self) -> GroundTruth:
        if len(self.boxes) != len(self.labels):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.labels)} labels: give one label per box")
        for box in self.boxes:
            if not all(math.isfinite(v) for v in box):
                raise ValueError(f"box {list(box)} is not finite")
            w, h = (box[2], box[3]) if self.box_format == "xywh" else (box[2] - box[0], box[3] - box[1])
            if w < 0 or h < 0:
                raise ValueError(f"box {list(box)} ({self.box_format}) has a negative width or height")
        return self

    def xyxy(self) -> list[tuple[float, float, float, float]]:
        """The boxes as corners."""
        if self.box_format == "xyxy":
            return list(self.boxes)
        return [(x, y, x + w, y + h) for x, y, w, h in self.boxes]
