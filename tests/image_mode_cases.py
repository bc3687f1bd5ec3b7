"""Images in unusual modes (16/32-bit and float grey, palette with transparency, LA, RGBA, CMYK JPEG, EXIF-rotated
JPEG, bilevel), encoded to bytes, for the preprocessing parity tests of both image pipelines."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

TINY = 64  # the tiny Visualized BGE encoder's image size

# (resized size, crop box) by hand: shorter side -> S, longer side int(S * long / short), offsets round() (half to even)
GEOMETRY = {
    (300, 200): {224: ((336, 224), (56, 0, 280, 224)), TINY: ((96, 64), (16, 0, 80, 64))},
    # 224 * 250 / 150 = 373.3 -> 373, top = round(74.5) = 74; 64 * 250 / 150 = 106.7 -> 106, top = round(21.0)
    (150, 250): {224: ((224, 373), (0, 74, 224, 298)), TINY: ((64, 106), (0, 21, 64, 85))},
}


def _field(w: int, h: int, lo: float, hi: float) -> np.ndarray:
    """A smooth pattern with edges, from lo to hi: (h, w) float64."""
    y, x = np.mgrid[0:h, 0:w]
    wave = 0.5 + 0.5 * np.sin(x / 7.0) * np.cos(y / 11.0)
    wave[(x // 25 + y // 25) % 2 == 0] *= 0.3  # hard edges, where the filter order shows most
    return lo + (hi - lo) * wave


def _rgb_array(w: int, h: int) -> np.ndarray:
    return np.stack([_field(w, h, 0, 255), _field(h, w, 0, 255).T, _field(w, h, 255, 0)], -1).astype(np.uint8)


def _encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def i16_png() -> bytes:
    # Values across the 255 clip: saturating before or after the resize gives different pixels.
    return _encode(Image.fromarray(_field(300, 200, 0, 700).astype(np.uint16)), "PNG")


def i16_png_full_range() -> bytes:
    return _encode(Image.fromarray(_field(150, 250, 0, 65535).astype(np.uint16)), "PNG")


def i32_tiff() -> bytes:
    return _encode(Image.fromarray(_field(300, 200, -300, 600).astype(np.int32)), "TIFF")


def f_tiff() -> bytes:
    return _encode(Image.fromarray(_field(150, 250, -40.5, 420.25).astype(np.float32)), "TIFF")


def p_transparent_png() -> bytes:
    img = Image.fromarray(_rgb_array(300, 200)).quantize(16)
    img.info["transparency"] = 3  # palette entry 3 is transparent; its colour stays in the palette
    return _encode(img, "PNG", transparency=3)


def la_png() -> bytes:
    la = np.stack([_field(150, 250, 0, 255), _field(150, 250, 255, 0)], -1).astype(np.uint8)
    return _encode(Image.fromarray(la, "LA"), "PNG")


def rgba_png() -> bytes:
    alpha = _field(300, 200, 0, 255).astype(np.uint8)
    alpha[:, :40] = 0  # fully transparent strip whose colour is not black
    return _encode(Image.fromarray(np.dstack([_rgb_array(300, 200), alpha]), "RGBA"), "PNG")


def cmyk_jpeg() -> bytes:
    return _encode(Image.fromarray(_rgb_array(150, 250)).convert("CMYK"), "JPEG", quality=95)


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display; upstream ignores it
    return _encode(Image.fromarray(_rgb_array(300, 200)), "JPEG", quality=95, exif=exif)


def bilevel_png() -> bytes:
    return _encode(Image.fromarray(_field(150, 250, 0, 255).astype(np.uint8)).convert("1"), "PNG")


CASES = {
    "I;16": i16_png,
    "I;16 full range": i16_png_full_range,
    "I": i32_tiff,
    "F": f_tiff,
    "P transparency": p_transparent_png,
    "LA": la_png,
    "RGBA": rgba_png,
    "CMYK": cmyk_jpeg,
    "EXIF-rotated": exif_rotated_jpeg,
    "1": bilevel_png,
}
MODES = {
    "I;16": "I;16",
    "I;16 full range": "I;16",
    "I": "I",
    "F": "F",
    "P transparency": "P",
    "LA": "LA",
    "RGBA": "RGBA",
    "CMYK": "CMYK",
    "EXIF-rotated": "RGB",
    "1": "1",
}
