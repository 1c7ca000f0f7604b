"""``POST /v1/detect:visualize`` with ground truth posted beside the image: the Objects365 paper's Fig. 9 colours at
the boxes' edges, the counts in headers, every kind of bad ground truth a 422."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from serving_helpers import encode

from serving import ServingConfig
from serving.backends import Backend, Detections, ModelInfo
from zoo.visualize import (
    FALSE_NEGATIVE_COLOUR,
    FALSE_POSITIVE_COLOUR,
    MATCHED_GT_COLOUR,
    MATCHED_PRED_COLOUR,
)


class FixedBackend(Backend):
    """Two detections for any image: a person (0.9) at 10,10-60,60 and a cat (0.8) at 100,100-150,150."""

    info = ModelInfo(name="fixed", version="1", task="detection", categories=("person", "cat"))

    def infer(self, images: list[np.ndarray]) -> list[Detections]:
        boxes = np.array([[10, 10, 60, 60], [100, 100, 150, 150]], np.float32)
        return [Detections(boxes, np.array([0.9, 0.8], np.float32), np.array([1, 2])) for _ in images]


IMAGE = encode(np.full((200, 200, 3), 128, np.uint8), "PNG")
# the person found (IoU 0.85 with its detection), a cat missed; the detected cat is in no ground truth
TRUTH = {"boxes": [[12, 12, 50, 50], [20, 100, 40, 40]], "labels": ["person", "Cat"]}


@pytest.fixture(scope="module")
def client():
    from serving_helpers import running

    with running(ServingConfig(score_threshold=0.3), [FixedBackend()]) as client:
        yield client


def post(client, truth, query: str = ""):
    form = {} if truth is None else {"ground_truth": truth if isinstance(truth, str) else json.dumps(truth)}
    return client.post(f"/v1/detect:visualize{query}", files={"file": ("grey.png", IMAGE, "image/png")}, data=form)


@pytest.mark.parametrize("truth", [TRUTH, {"boxes": [[12, 12, 62, 62], [20, 100, 60, 140]], "labels": [1, "2"],
                                           "box_format": "xyxy"}])
def test_ground_truth_is_drawn_in_the_papers_colours(client, truth):
    response = post(client, truth)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    counts = [response.headers[f"x-{k}"] for k in ("true-positives", "false-positives", "false-negatives")]
    assert counts == ["1", "1", "1"] and response.headers["x-detections"] == "2"
    picture = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert picture.shape[1] == 200 and picture.shape[0] > 200  # the legend strip below the image
    assert tuple(picture[40, 61]) == MATCHED_GT_COLOUR  # the person's ground truth, right edge at x=62
    assert tuple(picture[40, 59]) == MATCHED_PRED_COLOUR  # its detection, right edge at x=60
    assert tuple(picture[120, 21]) == FALSE_NEGATIVE_COLOUR  # the missed cat, left edge at x=20
    assert tuple(picture[125, 101]) == FALSE_POSITIVE_COLOUR  # the detected cat nobody annotated, left edge x=100
    assert tuple(picture[180, 180]) == (128, 128, 128)  # the image itself is untouched elsewhere


def test_iou_threshold_and_no_ground_truth(client):
    strict = post(client, TRUTH, "?iou_threshold=0.9")  # IoU 0.85 no longer matches: all four are errors
    assert [strict.headers[f"x-{k}"] for k in ("true-positives", "false-positives", "false-negatives")] == \
        ["0", "2", "2"]
    plain = post(client, None)
    assert plain.status_code == 200 and "x-true-positives" not in plain.headers
    assert Image.open(io.BytesIO(plain.content)).size == (200, 200)  # no legend without ground truth


@pytest.mark.parametrize(("truth", "message"), [
    ("{not json", "ground_truth: body: Invalid JSON"),
    ({"boxes": [[0, 0, 5, 5]], "labels": []}, "1 boxes but 0 labels"),
    ({"boxes": [[0, 0, 5]], "labels": ["cat"]}, "ground_truth: boxes.0"),
    ({"boxes": [[0, 0, -5, 5]], "labels": ["cat"]}, "negative width or height"),
    ({"boxes": [[0, 0, 5, 5]], "labels": ["dog"]}, "ground_truth: unknown class 'dog'"),
    ({"boxes": [[0, 0, 5, 5]], "labels": [3]}, "ground_truth: class label 3 is out of range 1..2"),
    ({"boxes": [[0, 0, 5, 5]], "labels": ["cat"], "box_format": "cxcywh"}, "box_format"),
    ({"boxes": [], "labels": [], "extra": 1}, "extra"),
    ("[]", "ground_truth: body: Input should be an object"),
])
def test_bad_ground_truth_is_a_422_naming_the_field(client, truth, message):
    response = post(client, truth)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"]["code"] == "bad_parameter" and message in body["error"]["message"], body


def test_openapi_documents_the_ground_truth_field(client):
    spec = client.get("/openapi.json").json()
    form = spec["paths"]["/v1/detect:visualize"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["file"] and form["properties"]["file"]["format"] == "binary"
    assert "[x, y, width, height]" in form["properties"]["ground_truth"]["description"]
