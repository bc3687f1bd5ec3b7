"""Every error the HTTP API can return, mapped to a status code and a JSON body in this one place.

Entry point: `install_error_handlers(app)`. Domain errors (`MMSearchError` subclasses) carry their own
`http_status` and `code`; the body is always `{"error": code, "message": text}`. Unexpected exceptions become a
500 with a generic message and one log line carrying the traceback; users never see a stack trace.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from mmsearch.errors import InvalidImageError, MMSearchError, UnknownCategoryError

log = logging.getLogger("mmsearch.api")


class UnsupportedMediaTypeError(InvalidImageError):
    """An upload (or the request body) has a content type the API does not accept."""

    code = "unsupported_media_type"
    http_status = 415


class RequestTooLargeError(MMSearchError):
    """The request body is larger than the upload limit allows."""

    code = "request_too_large"
    http_status = 413


class RequestTimeoutError(MMSearchError):
    """The request body stopped arriving before it was complete."""

    code = "request_timeout"
    http_status = 408


class ServerBusyError(MMSearchError):
    """Too many searches are already queued for the single inference worker."""

    code = "server_busy"
    http_status = 503


class PipelineUnavailableError(MMSearchError):
    """The search pipeline could not be built (an unexpected start-up failure; the log has the details)."""

    code = "pipeline_unavailable"
    http_status = 503


class ProductNotFoundError(MMSearchError):
    """No stored product has the requested id."""

    code = "product_not_found"
    http_status = 404


class ImageUnavailableError(MMSearchError):
    """A stored product's image could not be fetched or decoded for a thumbnail."""

    code = "image_unavailable"
    http_status = 502


def error_body(code: str, message: str) -> dict[str, str]:
    return {"error": code, "message": message}


def _http_code(status: int) -> str:
    return {
        400: "bad_request",
        404: "not_found",
        405: "method_not_allowed",
        413: "request_too_large",
        415: "unsupported_media_type",
    }.get(status, "http_error")


async def _domain_error(request: Request, exc: MMSearchError) -> JSONResponse:
    if exc.http_status >= 500:
        log.warning("%s %s -> %d %s: %s", request.method, request.url.path, exc.http_status, exc.code, exc)
    # After a stalled body the rest of it was never read: the connection cannot carry another request.
    headers = {"Connection": "close"} if isinstance(exc, RequestTimeoutError) else None
    body: dict[str, Any] = error_body(exc.code, exc.message)
    if isinstance(exc, UnknownCategoryError):
        body["suggestions"] = exc.suggestions  # the closest existing names, for a "did you mean"
    return JSONResponse(body, status_code=exc.http_status, headers=headers)


async def _client_gone(request: Request, exc: ClientDisconnect) -> Response:
    # The client hung up mid-request (closed tab, timeout on its side): nothing to answer, nothing broken.
    log.info("client disconnected during %s %s", request.method, request.url.path)
    return Response(status_code=499)  # never delivered; the access log shows nginx's "client closed request"


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where or 'request'}: {err.get('msg', 'invalid value')}")
    return JSONResponse(error_body("invalid_request", "; ".join(parts)), status_code=422)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such endpoint: {request.method} {request.url.path}"
    return JSONResponse(
        error_body(_http_code(exc.status_code), message),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    incident = uuid.uuid4().hex[:12]
    log.error("unexpected error %s on %s %s", incident, request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        error_body("internal_error", f"internal server error (incident {incident}); see the server log"),
        status_code=500,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers: domain errors, request validation, HTTP errors, and anything unexpected."""
    app.add_exception_handler(MMSearchError, _domain_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


__all__ = [
    "ImageUnavailableError",
    "PipelineUnavailableError",
    "ProductNotFoundError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "ServerBusyError",
    "UnsupportedMediaTypeError",
    "error_body",
    "install_error_handlers",
]
