"""Reads the `POST /search` form within bounds and turns it into a validated `SearchRequest`.

Entry point: `await read_search_form(request, settings)`. The body is read through a byte-counting `receive`, so
an oversize upload is refused (413) after at most the limit plus one chunk, whatever Content-Length claims; only
listed image content types are accepted (415); the image is decoded here, off the inference thread, with the
pixel bound from settings; every other field is parsed with an error that names it and the bad value.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request

from mmsearch.api.errors import RequestTooLargeError, UnsupportedMediaTypeError
from mmsearch.config import Settings
from mmsearch.errors import ImageTooLargeError, InvalidFilterError, InvalidImageError, InvalidQueryError
from mmsearch.media.decode import open_image
from mmsearch.pipelines import SearchRequest
from mmsearch.retriever.retriever import DEFAULT_WEIGHTS, SEARCH_MODES
from mmsearch.store import ProductFilter

ALLOWED_IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp")
# Decoded formats accepted for a query photo, whatever content type the upload declared (MPO: multi-picture JPEG).
UPLOAD_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP"})
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
# Room for the text fields and multipart framing on top of the image itself.
FORM_OVERHEAD_BYTES = 64 * 1024
MAX_FIELD_BYTES = 16 * 1024
FIELDS = (
    "image",
    "instruction",
    "k",
    "category",
    "min_price",
    "max_price",
    "min_rating",
    "mode",
    "weights",
    "ranker",
    "one_per_product",
    "rerank",
)
_TRUE = {"1", "true", "on", "yes"}
_FALSE = {"0", "false", "off", "no", ""}

# The form as OpenAPI sees it (the handler parses the body itself so that it can bound it).
SEARCH_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "image": {
            "type": "string",
            "format": "binary",
            "description": "query photo (JPEG, PNG, WebP, GIF or BMP, recognised from its bytes whatever "
            "content type is declared)",
        },
        "instruction": {"type": "string", "description": "e.g. 'phone case with this image theme'"},
        "k": {"type": "integer", "default": 9, "minimum": 1},
        "category": {"type": "string", "description": "exact main_category"},
        "min_price": {"type": "number", "minimum": 0},
        "max_price": {"type": "number", "minimum": 0},
        "min_rating": {"type": "number", "minimum": 0, "maximum": 5},
        "mode": {
            "type": "string",
            "enum": list(SEARCH_MODES),
            "description": "default: the encoder's (joint for Visualized BGE, fused for CLIP/SigLIP)",
        },
        "weights": {
            "type": "string",
            "default": "0.7,0.3",
            "description": "IMAGE,TEXT for weighted/fused; DENSE,LEXICAL for hybrid-bm25",
        },
        "ranker": {"type": "string", "enum": ["weighted", "rrf"], "default": "weighted"},
        "one_per_product": {
            "type": "boolean",
            "default": True,
            "description": "one result per product (its best-scoring image); false lists every image",
        },
        "rerank": {"type": "boolean", "default": False},
    },
}


def body_limit(settings: Settings) -> int:
    return settings.max_image_bytes + FORM_OVERHEAD_BYTES


def _too_large(settings: Settings, size: str) -> RequestTooLargeError:
    return RequestTooLargeError(
        f"request body is {size} bytes; the limit is {body_limit(settings)} bytes "
        f"(images up to {settings.max_image_bytes} bytes)"
    )


def bounded_request(request: Request, settings: Settings) -> Request:
    """The same request with a `receive` that raises `RequestTooLargeError` once the body passes the limit."""
    limit = body_limit(settings)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(settings, declared)
    seen = 0
    receive = request.receive

    async def counting_receive():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _too_large(settings, f"more than {limit}")
        return message

    return Request(request.scope, counting_receive)


def _text(form, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if isinstance(value, UploadFile):
        raise InvalidQueryError(f"{name} must be a text field, got a file upload")
    return value.strip()


def _int(form, name: str, default: int) -> int:
    raw = _text(form, name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidQueryError(f"{name} must be an integer, got {raw!r}") from None


def _number(form, name: str) -> float | None:
    raw = _text(form, name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise InvalidFilterError(f"invalid filter {name}={raw!r}: expected a number") from None


def _bool(form, name: str, default: bool = False) -> bool:
    raw = _text(form, name)
    if raw is None:
        return default
    raw = raw.lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise InvalidQueryError(f"{name} must be true or false, got {raw!r}")


def _weights(form) -> tuple[float, float]:
    raw = _text(form, "weights")
    if not raw:
        return DEFAULT_WEIGHTS
    try:
        a, b = (float(x) for x in raw.split(","))
    except ValueError:
        raise InvalidQueryError(
            f"weights must be two numbers 'IMAGE,TEXT' like 0.7,0.3; got {raw!r}"
        ) from None
    return a, b


def _decode(data: bytes, name: str, settings: Settings):
    try:
        return open_image(data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    except InvalidImageError as err:
        # open_image names bytes as "<n bytes>"; the uploader knows the file by its name.
        anonymous = f"<{len(data)} bytes>"
        if err.message.startswith(anonymous):
            raise type(err)(f"uploaded image {name!r}{err.message[len(anonymous) :]}") from None
        raise


async def _image(form, settings: Settings):
    upload = form.get("image")
    if upload is None:
        return None
    if not isinstance(upload, UploadFile):
        if upload == "":
            return None  # an empty text field, as an HTML form sends when no file is chosen
        raise InvalidQueryError("image must be a file upload (multipart/form-data), got a text field")
    name = upload.filename or "image"
    if not upload.filename and not upload.size:
        return None
    # The declared content type is the client's guess (browsers send application/octet-stream for unknown
    # extensions); the decoded format is what counts.
    data = await upload.read(settings.max_image_bytes + 1)
    if len(data) > settings.max_image_bytes:
        raise ImageTooLargeError(
            f"uploaded image {name!r} is larger than the limit of {settings.max_image_bytes} bytes"
        )
    image = await run_in_threadpool(_decode, data, name, settings)
    if image.format not in UPLOAD_FORMATS:
        raise UnsupportedMediaTypeError(
            f"uploaded image {name!r} is {image.format}; expected one of {', '.join(sorted(UPLOAD_FORMATS))}"
        )
    return image


async def read_search_form(request: Request, settings: Settings) -> SearchRequest:
    """Parse and validate one search form. Raises an `MMSearchError` subclass naming what is wrong."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in FORM_TYPES:
        raise UnsupportedMediaTypeError(
            f"request content type {content_type or 'none'!r} is not accepted; send multipart/form-data "
            "(fields: " + ", ".join(FIELDS) + ")"
        )
    bounded = bounded_request(request, settings)
    async with bounded.form(max_files=1, max_fields=len(FIELDS), max_part_size=MAX_FIELD_BYTES) as form:
        unknown = sorted(set(form.keys()) - set(FIELDS))
        if unknown:
            raise InvalidQueryError(f"unknown form field {unknown[0]!r}; expected any of {', '.join(FIELDS)}")
        k = _int(form, "k", 9)
        if not 1 <= k <= settings.max_k:
            raise InvalidQueryError(f"k must be an integer between 1 and {settings.max_k}, got {k}")
        filters = ProductFilter(
            category=_text(form, "category") or None,
            min_price=_number(form, "min_price"),
            max_price=_number(form, "max_price"),
            min_rating=_number(form, "min_rating"),
        )
        return SearchRequest(
            image=await _image(form, settings),
            instruction=_text(form, "instruction") or "",
            k=k,
            filters=None if filters.is_empty else filters,
            mode=_text(form, "mode") or None,
            weights=_weights(form),
            ranker=_text(form, "ranker") or "weighted",
            one_per_product=_bool(form, "one_per_product", default=True),
            rerank=_bool(form, "rerank"),
        )


__all__ = [
    "ALLOWED_IMAGE_TYPES",
    "UPLOAD_FORMATS",
    "FIELDS",
    "FORM_OVERHEAD_BYTES",
    "SEARCH_FORM_SCHEMA",
    "body_limit",
    "bounded_request",
    "read_search_form",
]
