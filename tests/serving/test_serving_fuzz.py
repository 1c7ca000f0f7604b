"""A seeded fuzz of the inference endpoints: random query parameters (Unicode digits, huge numbers, long strings,
broken percent-escapes) and image bytes (every mode and format, bit flips, cuts, insertions, mangled EXIF, random
content types, raw or multipart). Never a 5xx; every error in the API's JSON shape with its request id."""
from __future__ import annotations

import io
from collections import Counter
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image
from test_serving_batching import TimedBackend
from test_serving_limits import assert_json_error, jpeg_with_malformed_exif

from serving import ServingConfig

REQUESTS = 200
TEXT = ["", " ", ",", "²", "①", "١٢", "𝟙", "１", "-1", "-0", "+1", "0" * 5000, "9" * 5000, "1e400", "nan", "inf",
        "-inf", "0x10", "1_0", "thing", "THING", " thing , 1 ", "timed", "%", "\x00", "a" * 10_001, "☃" * 300,
        "png", "jpeg", "rle", "0.5", "1.0", "1", "1000", "1001", "1e-400"]
ESCAPES = ["%", "%ZZ", "%FF%FE", "%ED%A0%80", "%00", "%2", "+", "&&", "=="]  # sent as they are: broken UTF-8 etc.
PARAMETERS = ["model", "score_threshold", "max_detections", "classes", "format"]
MODES = ["RGB", "L", "RGBA", "P", "CMYK", "1", "LA", "I;16"]
CONTENT_TYPES = [None, "image/jpeg", "image/png", "image/webp", "application/octet-stream", "image/gif",
                 "text/plain", "image/png; charset=☃", ";;", "multipart/form-data"]


def image_bytes(rng: np.random.Generator) -> bytes:
    """A small image of a random mode and format, often damaged."""
    height, width = (int(v) for v in rng.integers(1, 48, 2))
    mode, fmt = MODES[rng.integers(len(MODES))], ["JPEG", "PNG", "WEBP"][rng.integers(3)]
    if mode == "I;16":
        image, fmt = Image.fromarray(rng.integers(0, 65536, (height, width)).astype(np.uint16)), "PNG"
    else:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
    except OSError:  # a mode the format cannot hold (e.g. CMYK as PNG)
        image.convert("RGB").save(buffer, format=fmt)
    data = bytearray(buffer.getvalue())
    damage = rng.integers(7)
    if damage == 0:
        for _ in range(rng.integers(1, 8)):
            data[rng.integers(len(data))] = rng.integers(256)
    elif damage == 1:
        data = data[: rng.integers(len(data))]
    elif damage == 2:
        at = rng.integers(len(data))
        data[at:at] = rng.bytes(int(rng.integers(1, 64)))
    elif damage == 3:
        data = bytearray(rng.bytes(int(rng.integers(0, 256))))
    elif damage == 4:
        data = bytearray(jpeg_with_malformed_exif(np.asarray(image.convert("RGB"))))
    return bytes(data)


def query(rng: np.random.Generator) -> str:
    """None (for half the requests, so that their images reach the decoder), or some of the parameters, each a
    random value percent-encoded or a raw escape."""
    pairs = []
    for name in rng.choice(PARAMETERS, size=rng.integers(1, 4) if rng.random() < 0.5 else 0, replace=False):
        raw = rng.random() < 0.2
        value = ESCAPES[rng.integers(len(ESCAPES))] if raw else quote(TEXT[rng.integers(len(TEXT))], safe="")
        pairs.append(f"{name}={value}")
    return "&".join(pairs)


@pytest.fixture(scope="module")
def stub_server(serve):
    with serve(ServingConfig(max_upload_bytes=1_000_000, max_pixels=1_000_000), [TimedBackend(0.0)]) as client:
        yield client


def test_random_parameters_and_image_bytes_never_get_a_5xx(stub_server):
    rng = np.random.default_rng(12)
    statuses: Counter[int] = Counter()
    for _ in range(REQUESTS):
        path = ["/v1/detect", "/v1/detect:visualize", "/v1/segment"][rng.integers(3)]
        data, content_type = image_bytes(rng), CONTENT_TYPES[rng.integers(len(CONTENT_TYPES))]
        url = f"{path}?{query(rng)}"
        if content_type == "multipart/form-data":
            response = stub_server.post(url, files={"file": ("x", data, "image/png")})
        else:
            headers = {"content-type": content_type.encode()} if content_type else {}
            response = stub_server.post(url, content=data, headers=headers)
        statuses[response.status_code] += 1
        assert response.status_code < 500, (url[:200], content_type, response.text[:300])
        if response.status_code >= 400:
            assert_json_error(response)
    assert statuses[200] >= 10 and len(statuses) >= 4, statuses  # the fuzz reaches answers and several refusals
