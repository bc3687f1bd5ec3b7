"""Bounded image decoding: every bad input becomes an InvalidImageError naming the source and the reason."""

from __future__ import annotations

import io
import os

import pytest
from indexer_support import png_header_only
from PIL import Image

from mmsearch.errors import ImageTooLargeError, InvalidImageError
from mmsearch.media.decode import open_image


def _png_bytes(size=(32, 24), mode="RGB") -> bytes:
    buf = io.BytesIO()
    # Noise, so the encoded size grows with the pixel count (flat colours compress to almost nothing).
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def test_open_image_decodes_valid_png_bytes():
    img = open_image(_png_bytes((32, 24)))
    assert img.size == (32, 24)
    assert img.mode == "RGB"


def test_open_image_keeps_mode_as_stored():
    assert open_image(_png_bytes((8, 8), mode="L")).mode == "L"


def test_open_image_reads_local_path(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(_png_bytes((10, 12)))
    assert open_image(path).size == (10, 12)


def test_open_image_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(InvalidImageError, match="zero-byte file"):
        open_image(path)


def test_open_image_missing_file(tmp_path):
    with pytest.raises(InvalidImageError, match="file not found"):
        open_image(tmp_path / "nope.png")


def test_open_image_not_an_image():
    with pytest.raises(InvalidImageError, match="not an image"):
        open_image(b"<html>404 not found</html>")


def test_open_image_truncated_png():
    data = _png_bytes((64, 64))
    with pytest.raises(InvalidImageError, match="corrupt or truncated"):
        open_image(data[: len(data) // 2])


def test_open_image_refuses_pixels_over_limit_from_header():
    with pytest.raises(InvalidImageError, match="3000x2000 = 6000000 pixels exceeds the limit of 1000000"):
        open_image(png_header_only(3000, 2000), max_pixels=1_000_000)


def test_open_image_refuses_decompression_bomb():
    with pytest.raises(InvalidImageError, match="decompression bomb refused"):
        open_image(png_header_only(50_000, 50_000))


def test_open_image_refuses_bytes_over_limit():
    with pytest.raises(ImageTooLargeError, match="exceeds the limit of 100 bytes"):
        open_image(_png_bytes((32, 32)), max_bytes=100)


def test_open_image_refuses_file_over_limit_without_reading(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(_png_bytes((32, 32)))
    with pytest.raises(ImageTooLargeError, match=r"big\.png: \d+ bytes exceeds the limit of 100 bytes"):
        open_image(path, max_bytes=100)


def test_open_image_refuses_unsupported_format():
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, format="ICO")  # Pillow 12.3 writes no frame for images under 16 px
    with pytest.raises(InvalidImageError, match="unsupported image format 'ICO'"):
        open_image(buf.getvalue())


def test_open_image_checks_pil_input_pixels():
    with pytest.raises(InvalidImageError, match="pixels exceeds the limit of 100"):
        open_image(Image.new("RGB", (20, 20)), max_pixels=100)


def test_damaged_header_of_a_known_format_is_reported_as_corrupt_not_as_not_an_image():
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buf, format="JPEG")
    damaged = buf.getvalue()[:3] + b"\x00" * 200  # a JPEG start marker, then nothing PIL can parse
    with pytest.raises(InvalidImageError, match="corrupt or truncated image"):
        open_image(damaged)
