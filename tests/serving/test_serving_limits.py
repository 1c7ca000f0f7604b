"""Bad uploads and bad parameters: each a clear 4xx, never a 500, and the server keeps serving afterwards."""
from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageFile
from serving_helpers import encode
from test_serving_batching import TimedBackend, grey

from serving import ServingConfig
from serving.backends.base import Detections
from serving.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType
from serving.limits import DecodedImage, decode_image
from serving.results import encode_rle
from zoo.letterbox import sniff_format


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
        sent = {"files": {"field": (None, "value")}} if "data" in kwargs and "files" not in kwargs else kwargs
        response = limited_client.post(path + query, **sent)
        assert response.status_code == status, (query, sent.get("headers"), response.text[:300])
        error = response.json()["error"]
        assert error["code"] and error["message"], response.text
    good = limited_client.post("/v1/detect", content=photo, headers={"content-type": "image/jpeg"})
    assert good.status_code == 200 and good.json()["image"]["width"] == photos["astronaut"].shape[1]


def test_many_bad_images_in_a_row_do_not_kill_the_worker(limited_client, photos):
    photo = encode(photos["coffee"], "PNG")
    for cut in (8, 33, 100, len(photo) // 3, 2 * len(photo) // 3):
        assert limited_client.post("/v1/detect", content=photo[:cut]).status_code == 422
    assert limited_client.post("/v1/detect", content=photo).status_code == 200


# Issue 12: each test below reproduced a 500, a wrong image or an unbounded decode on the code before its fix.

@pytest.fixture()
def stub_client(serve):
    """A server on a backend that answers at once (one box per image): the service's own costs only."""
    with serve(ServingConfig(), [TimedBackend(0.0)]) as client:
        yield client


def assert_json_error(response, status: int | None = None) -> dict:
    """A 4xx/5xx in the API's shape: ``{"error": {"code", "message"}, "request_id"}``, the id as X-Request-ID."""
    assert status is None or response.status_code == status, response.text[:300]
    body = response.json()
    assert body["error"]["code"] and body["error"]["message"], body
    assert body["request_id"] == response.headers["x-request-id"], body
    return body["error"]


@pytest.mark.parametrize("classes", ["²", "①", "١", "𝟙", "0" * 5000, "9" * 5000, "-" + "0" * 5000, "-0", "1,,²"])
def test_classes_beyond_ascii_digits_are_a_422(stub_client, classes):
    """``str.isdigit`` takes "²" and "①", which int() refuses; int() refuses over 4300 digits: both were 500s."""
    response = stub_client.post("/v1/detect", params={"classes": classes}, content=encode(grey(90), "PNG"))
    assert "class" in assert_json_error(response, 422)["message"]


def test_classes_labels_with_leading_zeros_select(stub_client):
    response = stub_client.post("/v1/detect?score_threshold=0", params={"classes": "0" * 4999 + "1"},
                                content=encode(grey(90), "PNG"))
    assert response.status_code == 200 and [d["label"] for d in response.json()["detections"]] == [1]


def jpeg_with_malformed_exif(pixels: np.ndarray) -> bytes:
    """A JPEG whose EXIF block holds orientation 6 and Compression (a SHORT tag) as ASCII text: readable, but
    Pillow's ``ImageOps.exif_transpose`` re-encodes the block and raises struct.error on it."""
    entries = [(0x0103, 2, 6, struct.pack(">I", 38)), (0x0112, 3, 1, struct.pack(">HH", 6, 0))]
    ifd = struct.pack(">H", len(entries)) + b"".join(struct.pack(">HHI", tag, kind, count) + value
                                                      for tag, kind, count, value in entries)
    tiff = b"MM\0*" + struct.pack(">I", 8) + ifd + struct.pack(">I", 0) + b"Canon\0"
    assert len(tiff) == 38 + 6
    return encode(pixels, "JPEG", exif=b"Exif\0\0" + tiff)


def test_malformed_exif_decodes_upright(stub_client, photos):
    from PIL import ImageOps

    pixels = photos["coffee"]
    data = jpeg_with_malformed_exif(pixels)
    with pytest.raises(struct.error):  # what the server called, answering 500
        ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert decode_image(data, None, 10**7).pixels.shape == (pixels.shape[1], pixels.shape[0], 3)
    response = stub_client.post("/v1/detect", content=data)
    assert response.status_code == 200, response.text
    assert response.json()["image"] == {"width": pixels.shape[0], "height": pixels.shape[1]}  # orientation 6


def test_16_bit_grey_png_scales_to_8_bits():
    """A real 16-bit greyscale PNG gradient (IHDR bit depth 16, colour type 0) keeps its gradient; Pillow's
    convert("RGB") clipped every value over 255 to white."""
    gradient = np.linspace(0, 65535, 96 * 128).round().astype(np.uint16).reshape(96, 128)
    data = encode(gradient, "PNG")
    assert data[24:26] == b"\x10\x00"
    pixels = decode_image(data, "image/png", 10**7).pixels
    assert pixels.shape == (96, 128, 3) and (pixels == pixels[..., :1]).all()
    np.testing.assert_array_equal(pixels[..., 0], gradient >> 8)
    assert pixels.min() == 0 and pixels.max() == 255 and abs(pixels.mean() - 127.5) < 1


def test_pixel_limit_is_checked_from_the_header_before_decoding(monkeypatch):
    """A real, fully compressed 6000x6000 PNG (the zlib stream of its pixels, 35 KB) is refused without a pixel
    decoded."""
    bomb = encode(np.zeros((6000, 6000), np.uint8), "PNG", optimize=True)
    assert len(bomb) < 100_000

    def no_decoding(self):
        raise AssertionError("pixels decoded before the pixel limit was checked")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(PayloadTooLarge, match="6000x6000"):
        decode_image(bomb, "image/png", max_pixels=10**7)


class BrokenBackend(TimedBackend):
    """Answers with a malformed result (one box, two scores): the server's own code then raises, a bug."""

    def infer(self, images):
        return [Detections(np.zeros((1, 4), np.float32), np.ones(2, np.float32), np.ones(1, np.int64))
                for _ in images]


def test_an_unexpected_exception_is_a_json_500_with_the_request_id_logged_once(serve, caplog):
    with serve(ServingConfig(), [BrokenBackend(0.0)]) as client:
        caplog.clear()
        response = client.post("/v1/detect", content=encode(grey(90), "PNG"), headers={"x-request-id": "bug-1"})
    error = assert_json_error(response, 500)
    assert error["code"] == "internal_error" and response.headers["x-request-id"] == "bug-1"
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and tracebacks[0].exc_info[0] is IndexError, caplog.records


@pytest.fixture()
def held_decodes(monkeypatch):
    """Decoding waits until the test sets the returned event: a decode as slow as a decompression bomb's."""
    release, calls = threading.Event(), []

    def slow_decode(data: bytes, declared: str | None, max_pixels: int) -> DecodedImage:
        calls.append(len(data))
        release.wait(20)
        return decode_image(data, declared, max_pixels)

    monkeypatch.setattr("serving.state.decode_image", slow_decode)
    yield release, calls
    release.set()


def test_decodes_count_against_the_queue_limit(serve, held_decodes):
    """Ten slow decodes at once with a queue of 3: three are admitted (one decoding, two waiting for the compute
    thread), seven refused at once; before, all ten queued for the compute thread, in front of inference."""
    release, calls = held_decodes
    data = encode(grey(90), "PNG")
    with serve(ServingConfig(queue_size=3), [TimedBackend(0.0)]) as client, ThreadPoolExecutor(10) as pool:
        answers = [pool.submit(client.post, "/v1/detect", content=data) for _ in range(10)]
        deadline = time.monotonic() + 20
        while sum(a.done() for a in answers) < 7:
            assert time.monotonic() < deadline, "the decodes beyond the queue limit were not refused"
            time.sleep(0.02)
        assert len(calls) == 1
        release.set()
        statuses = sorted(a.result().status_code for a in answers)
    assert statuses == [200] * 3 + [503] * 7
    refused = next(a.result() for a in answers if a.result().status_code == 503)
    assert assert_json_error(refused)["code"] == "overloaded" and refused.headers["retry-after"] == "1"


def test_decodes_count_against_the_request_deadline(serve, held_decodes):
    """A decode slower than the request timeout is a 504 at the deadline; it keeps its place in the queue until it
    ends, so it cannot be run around the limit."""
    release, _ = held_decodes
    data = encode(grey(90), "PNG")
    with serve(ServingConfig(queue_size=1, request_timeout_s=0.5), [TimedBackend(0.0)]) as client:
        started = time.monotonic()
        late = client.post("/v1/detect", content=data)
        assert assert_json_error(late, 504)["code"] == "timeout" and time.monotonic() - started < 5
        assert assert_json_error(client.post("/v1/detect", content=data), 503)["code"] == "overloaded"
        release.set()
        deadline = time.monotonic() + 10
        while (response := client.post("/v1/detect", content=data)).status_code == 503:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert response.status_code == 200, response.text
