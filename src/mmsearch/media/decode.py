"""Decode and validate one image from a path, bytes, or PIL image, with byte and pixel bounds.

Entry point: `open_image(source, max_bytes=..., max_pixels=...)`. Every stage (indexer, encoder, API) decodes
through here, so a corrupt, truncated, zero-byte, non-image or decompression-bomb input always becomes an
`InvalidImageError` naming the source and the reason, never a PIL traceback.

Local files are read by `read_regular_file`: regular files only (a FIFO, device, socket or directory is refused
without reading, so a read can never block on a pipe), with a byte cap, optionally confined to allowed root
folders after following symlinks (`confine`). An image whose aspect ratio exceeds `MAX_ASPECT_RATIO` is refused from
its header: resizing its short side to the model's 224 px would blow its long side up to millions of pixels
(60000x3 -> 224x4,480,000, 4 GiB).

No EXIF orientation is applied: Visualized BGE upstream encodes images as stored, and query and product images
must be decoded the same way.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mmsearch.errors import ImageTooLargeError, InvalidImageError, PathNotAllowedError
from mmsearch.limits import MAX_IMAGE_ASPECT_RATIO, MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS

DEFAULT_MAX_BYTES = MAX_IMAGE_BYTES
DEFAULT_MAX_PIXELS = MAX_IMAGE_PIXELS
MAX_ASPECT_RATIO = MAX_IMAGE_ASPECT_RATIO
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


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def confine(path: str | Path, roots: Sequence[str | Path]) -> Path:
    """`path` with every symlink resolved, if that lies under one of `roots` (also resolved); else raise.

    Raises:
        PathNotAllowedError: the resolved path is outside every root (absolute paths, `..`, symlinks out).
    """
    real = Path(os.path.realpath(path))
    if any(_inside(real, Path(os.path.realpath(root))) for root in roots):
        return real
    allowed = ", ".join(str(r) for r in roots) or "none"
    shown = f"{path} (resolves to {real})" if str(real) != str(path) else str(path)
    raise PathNotAllowedError(
        f"{shown}: outside the allowed folders ({allowed}); pass --allow-path DIR to allow another folder"
    )


def read_regular_file(
    path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES, *, roots: Sequence[str | Path] | None = None
) -> bytes:
    """The bytes of a regular file of at most `max_bytes`, read without ever blocking on a pipe or device.

    Args:
        path: a local path.
        max_bytes: refuse a larger file (checked before reading, and again while reading, as a file may grow).
        roots: when given, the path must resolve (symlinks followed) under one of these folders.

    Raises:
        PathNotAllowedError: outside `roots`.
        ImageTooLargeError: over `max_bytes`.
        InvalidImageError: missing, unreadable, or not a regular file.
    """
    p = Path(path)
    target = confine(p, roots) if roots is not None else p
    try:
        # stat first: opening a device can have side effects, so anything but a regular file is never opened.
        before = os.stat(target)
        if not stat.S_ISREG(before.st_mode):
            raise InvalidImageError(f"{p}: {_kind(before.st_mode)}, not a regular file")
        # O_NONBLOCK: if the file was swapped for a FIFO since the stat, open() still returns at once.
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        if roots is not None:
            flags |= getattr(
                os, "O_NOFOLLOW", 0
            )  # `target` has no symlinks left; one appearing now is refused
        fd = os.open(target, flags)
    except FileNotFoundError as e:
        raise InvalidImageError(f"{p}: file not found") from e
    except OSError as e:
        raise InvalidImageError(f"{p}: cannot read ({e.strerror or e})") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise InvalidImageError(f"{p}: changed while being opened; not read")
        if st.st_size > max_bytes:
            raise ImageTooLargeError(f"{p}: {st.st_size} bytes exceeds the limit of {max_bytes} bytes")
        if roots is not None:
            confine(_opened_path(fd, target), roots)  # a parent folder swapped for a symlink after the check
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise ImageTooLargeError(f"{p}: more than {max_bytes} bytes (the limit)")
        return b"".join(chunks)
    except OSError as e:
        raise InvalidImageError(f"{p}: cannot read ({e.strerror or e})") from e
    finally:
        os.close(fd)


def _opened_path(fd: int, fallback: Path) -> Path:
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:  # no /proc (macOS): the check before opening stands
        return fallback


def read_bounded(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Read a local regular file of at most `max_bytes` (see `read_regular_file`)."""
    return read_regular_file(path, max_bytes)


def check_aspect(what: str, width: int, height: int, max_aspect: float | None = None) -> None:
    """Refuse an image whose longer side exceeds `max_aspect` (default `MAX_ASPECT_RATIO`) times its shorter side."""
    max_aspect = MAX_ASPECT_RATIO if max_aspect is None else max_aspect
    short, long = min(width, height), max(width, height)
    if short >= 1 and long > max_aspect * short:
        raise InvalidImageError(
            f"{what}: {width}x{height} has an aspect ratio of {long / short:.0f}:1, over the limit of "
            f"{max_aspect:g}:1"
        )


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
        check_aspect(what, source.width, source.height)
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
            check_aspect(what, w, h)
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
    "MAX_ASPECT_RATIO",
    "ImageSource",
    "check_aspect",
    "confine",
    "open_image",
    "read_bounded",
    "read_regular_file",
]
