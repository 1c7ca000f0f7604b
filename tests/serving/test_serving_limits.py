"""Bad uploads and bad parameters: each a clear 4xx, never a 500, and the server keeps serving afterwards."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from serving_helpers import encode

from serving import ServingConfig
from serving.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType
from serving.limits import decode_image, sniff_format
from serving.results import encode_rle


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A valid-looking PNG whose header declares width x height RGB pixels, with a tiny data chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + \
        chunk(b"IEND", b"")


def test_decode_accepts_the_three_formats_and_sniffs_them(photos):
    pixels = photos["chelsea"]
    for fmt in ("JPEG", "PNG", "WEBP"):
        data = encode(pixels, fmt)
        assert sniff_format(data) == fmt
        decoded = decode_image(data, None, max_pixels=10**7)
        assert decoded.pixels.shape == pixels.shape and decoded.format == fmt
    grey = encode(pixels[..., 0], "PNG")
    assert decode_image(grey, "image/png", 10**7).pixels.shape == pixels.shape  # converted to RGB


@pytest.mark.parametrize(("data", "declared", "error"), [
    (b"", None, InvalidImage),
    (b"GIF89a" + b"\0" * 64, None, UnsupportedMediaType),
    (b"\x12\x34" * 100, "image/jpeg", InvalidImage),
    (png_bomb(), None, PayloadTooLarge),
    (png_bomb(5000, 5000), None, PayloadTooLarge),  # under PIL's own bomb limit, over ours
])
def test_decode_refuses(data, declared, error):
    with pytest.raises(error):
        decode_image(data, declared, max_pixels=10**7)


def test_rle_is_column_major_and_starts_with_zeros():
    mask = np.array([[1, 0, 0], [1, 1, 0]], dtype=bool)
    assert encode_rle(mask).counts == [0, 2, 1, 1, 2]
    assert encode_rle(np.zeros((2, 2), bool)).counts == [4]


@pytest.fixture(scope="module")
def limited_client(serve, demo_backend):
    with serve(ServingConfig(max_upload_bytes=2_000_000, max_pixels=4_000_000), [demo_backend]) as client:
        yield client


def bad_requests(photo: bytes) -> list[tuple[str, dict, int]]:
    """(query, request keyword arguments, expected status)."""
    truncated = photo[: len(photo) // 2]
    return [
        ("", {"content": b"", "headers": {"content-type": "image/jpeg"}}, 422),
        ("", {"content": truncated, "headers": {"content-type": "image/jpeg"}}, 422),
        ("", {"content": np.random.default_rng(0).bytes(5000)}, 415),
        ("", {"content": np.random.default_rng(1).bytes(5000), "headers": {"content-type": "image/png"}}, 422),
        ("", {"content": png_bomb(), "headers": {"content-type": "image/png"}}, 413),
        ("", {"content": b"\0" * (50 * 1024 * 1024), "headers": {"content-type": "image/jpeg"}}, 413),
        ("", {"content": photo, "headers": {"content-type": "text/plain"}}, 415),
        ("", {"content": photo, "headers": {"content-type": "image/gif"}}, 415),
        ("", {"files": {"note": ("a.txt", b"hello", "text/plain")}, "data": {}}, 415),
        ("", {"data": {"field": "value"}}, 422),  # multipart without a file part
        ("?score_threshold=-0.5", {"content": photo}, 422),
        ("?score_threshold=1.5", {"content": photo}, 422),
        ("?score_threshold=nan", {"content": photo}, 422),
        ("?max_detections=0", {"content": photo}, 422),
        ("?max_detections=-3", {"content": photo}, 422),
        ("?format=gif", {"content": photo}, 422),
        ("?model=no_such_model", {"content": photo}, 404),
    ]


def test_bad_inputs_get_4xx_and_the_server_keeps_serving(limited_client, photos):
    photo = encode(photos["astronaut"], "JPEG")
    for query, kwargs, status in bad_requests(photo):
        path = "/v1/detect:visualize" if "format" in query else "/v1/detect"
        if "data" in kwargs and "files" not in kwargs:
            kwargs = {"files": {"field": (None, "value")}}
        response = limited_client.post(path + query, **kwargs)
        assert response.status_code == status, (query, kwargs.get("headers"), response.text[:300])
        error = response.json()["error"]
        assert error["code"] and error["message"], response.text
    good = limited_client.post("/v1/detect", content=photo, headers={"content-type": "image/jpeg"})
    assert good.status_code == 200 and good.json()["image"]["width"] == photos["astronaut"].shape[1]


def test_many_bad_images_in_a_row_do_not_kill_the_worker(limited_client, photos):
    photo = encode(photos["coffee"], "PNG")
    for cut in (8, 33, 100, len(photo) // 3, 2 * len(photo) // 3):
        assert limited_client.post("/v1/detect", content=photo[:cut]).status_code == 422
    assert limited_client.post("/v1/detect", content=photo).status_code == 200
