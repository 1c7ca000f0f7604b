"""zoo.letterbox.decode_image: the one decoder of photo bytes (serving, the export parity check, Triton's
preprocessing step): upright RGB, 16-bit grey kept, oversized images refused from their header."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from zoo.letterbox import ImageDecodeError, ImageTooLarge, decode_image, sniff_format


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_formats_are_sniffed_and_decoded_to_rgb(fmt: str) -> None:
    data = _encode(Image.new("L", (7, 5), 128), fmt)
    assert sniff_format(data) == fmt
    image = decode_image(data, formats=(fmt,))
    assert (image.mode, image.size) == ("RGB", (7, 5))


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to show upright
    data = _encode(Image.new("RGB", (8, 4)), "JPEG", exif=exif.tobytes())
    assert decode_image(data).size == (4, 8)


def test_16_bit_grey_keeps_its_gradient() -> None:
    ramp = np.tile(np.arange(0, 65536, 256, dtype=np.uint16), (2, 1))
    pixels = np.asarray(decode_image(_encode(Image.fromarray(ramp), "PNG")))
    assert pixels[0, :, 0].tolist() == list(range(256))


def test_max_pixels_and_bombs_are_refused_before_decoding() -> None:
    data = _encode(Image.new("RGB", (20, 10)), "PNG")
    assert decode_image(data, max_pixels=200).size == (20, 10)
    with pytest.raises(ImageTooLarge, match="image of 20x10 pixels exceeds the limit of 199 pixels"):
        decode_image(data, max_pixels=199)
    bomb = _encode(Image.new("1", (30000, 30000)), "PNG")
    with pytest.raises(ImageTooLarge, match="decompression bomb"):
        decode_image(bomb)


def test_unreadable_bytes() -> None:
    with pytest.raises(ImageDecodeError, match=r"not a decodable image \(12 bytes\)"):
        decode_image(b"not an image")
    png = _encode(Image.new("RGB", (64, 64)), "PNG")
    with pytest.raises(ImageDecodeError, match="corrupt or truncated PNG image"):
        decode_image(png[: len(png) // 2], formats=("PNG",))
