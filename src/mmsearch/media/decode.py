"""Decode and validate one image from a path, bytes, or PIL image, with byte and pixel bounds.

Entry point: `open_image(source, max_bytes=..., max_pixels=...)`. Every stage (indexer, encoder, API) decodes
through here, so a corrupt, truncated, zero-byte, non-image or decompression-bomb input always becomes an
`InvalidImageError` naming the source and the reason, never a PIL traceback.

No EXIF orientation is applied: Visualized BGE upstream encodes images as stored, and query and product images
must be decoded the same way.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mmsearch.errors import ImageTooLargeError, InvalidImageError
from mmsearch.limits import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS

DEFAULT_MAX_BYTES = MAX_IMAGE_BYTES
DEFAULT_MAX_PIXELS = MAX_IMAGE_PIXELS
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"})

ImageSource = str | Path | bytes | bytearray | memoryview | Image.Image

# Leading bytes of the allowed formats. Data that starts like one of them but that PIL cannot identify is a damaged
# image, not "not an image" (Pillow >= 12.3 rejects a JPEG with broken tables at identify time, not at decode time).
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def _looks_like_an_image(data: bytes) -> bool:
    return data.startswith(_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _describe(source: ImageSource) -> str:
    if isinstance(source, str | Path):
        return str(source)
    if isinstance(source, Image.Image):
        return f"<PIL image {source.width}x{source.height}>"
    return f"<{len(source)} bytes>"


def read_bounded(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Read a local file, refusing anything over `max_bytes` before reading it all."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError as e:
        raise InvalidImageError(f"{p}: file not found") from e
    except OSError as e:
        raise InvalidImageError(f"{p}: cannot read ({e.strerror or e})") from e
    if size > max_bytes:
        raise ImageTooLargeError(f"{p}: {size} bytes exceeds the limit of {max_bytes} bytes")
    return p.read_bytes()


def open_image(
    source: ImageSource,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Return a fully decoded PIL image (mode kept as stored) or raise `InvalidImageError`.

    Args:
        source: a local path, encoded bytes, or an already decoded PIL image.
        max_bytes: limit on the encoded size.
        max_pixels: limit on width*height, checked from the header before decoding (bomb guard).
    """
    what = _describe(source)
    if isinstance(source, Image.Image):
        if source.width * source.height > max_pixels:
            raise InvalidImageError(
                f"{what}: {source.width}x{source.height} = {source.width * source.height} pixels "
                f"exceeds the limit of {max_pixels}"
            )
        if source.width < 1 or source.height < 1:
            raise InvalidImageError(f"{what}: empty image")
        return source
    if isinstance(source, str | Path):
        data = read_bounded(source, max_bytes)
    else:
        data = bytes(source)
        if len(data) > max_bytes:
            raise ImageTooLargeError(f"{what}: {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    if not data:
        raise InvalidImageError(f"{what}: zero-byte file")
    try:
        with warnings.catch_warnings():
            # PIL warns (not raises) between MAX_IMAGE_PIXELS and 2x; our own bound below decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.format not in ALLOWED_FORMATS:
                raise InvalidImageError(f"{what}: unsupported image format {img.format!r}")
            w, h = img.size
            if w < 1 or h < 1:
                raise InvalidImageError(f"{what}: empty image ({w}x{h})")
            if w * h > max_pixels:
                raise InvalidImageError(f"{what}: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}")
            img.load()
    except InvalidImageError:
        raise
    except Image.DecompressionBombError as e:
        raise InvalidImageError(f"{what}: decompression bomb refused ({e})") from e
    except UnidentifiedImageError as e:
        if _looks_like_an_image(data):
            raise InvalidImageError(f"{what}: corrupt or truncated image (unreadable header)") from e
        raise InvalidImageError(f"{what}: not an image (cannot identify format)") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InvalidImageError(f"{what}: corrupt or truncated image ({e})") from e
    return img


__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "ImageSource",
    "open_image",
    "read_bounded",
]
