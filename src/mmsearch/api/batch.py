"""`POST /search/batch`: up to `serve_max_batch` queries in one JSON body, answered in one response.

Entry point: `await read_batch(request, service)` returns one `SearchRequest` or error per query. The body is read
through the same byte-counting stream as the search form (413 past the limit) and parsed with
`mmsearch.pipelines.batch.parse_query`. A query's image is an http(s) URL the server fetches with the upload limits
(bytes, pixels, formats; one retry, 10 s timeout), or `image_id`, the id of an indexed product whose stored image is
used. Images are fetched concurrently, off the inference thread; a query whose image fails gets its own error.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from mmsearch.api.errors import UnsupportedMediaTypeError
from mmsearch.api.forms import UPLOAD_FORMATS, bounded_request
from mmsearch.errors import InvalidImageError, InvalidQueryError, MMSearchError
from mmsearch.pipelines import SearchRequest
from mmsearch.pipelines.batch import QuerySpec, parse_query

QUERY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "image": {"type": "string", "description": "http(s) URL of the query photo, fetched by the server"},
        "image_id": {
            "type": "string",
            "description": "id of an indexed product: its stored image is the query",
        },
        "instruction": {"type": "string"},
        "k": {"type": "integer", "minimum": 1, "default": 9},
        "filters": {
            "type": "object",
            "properties": {
                "category": {"type": "string"},
                "min_price": {"type": "number", "minimum": 0},
                "max_price": {"type": "number", "minimum": 0},
                "min_rating": {"type": "number", "minimum": 0, "maximum": 5},
            },
        },
        "mode": {
            "type": "string",
            "enum": ["joint", "weighted", "fused"],
            "description": "default: the encoder's (joint for Visualized BGE, fused for CLIP/SigLIP)",
        },
        "weights": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
        "ranker": {"type": "string", "enum": ["weighted", "rrf"], "default": "weighted"},
        "rrf_k": {"type": "integer", "minimum": 1},
        "rerank": {"type": "boolean", "default": False},
    },
}
BATCH_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["queries"],
    "additionalProperties": False,
    "properties": {
        "queries": {
            "type": "array",
            "items": QUERY_SCHEMA,
            "minItems": 1,
            "description": "at most MMSEARCH_SERVE_MAX_BATCH queries (default 16)",
        }
    },
}


async def _json_body(request: Request, settings) -> Any:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise UnsupportedMediaTypeError(
            f"request content type {content_type or 'none'!r} is not accepted; send application/json"
        )
    body = await bounded_request(request, settings).body()
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as err:
        raise InvalidQueryError(f"the body is not valid JSON ({str(err).split(':')[0]})") from None


def _public_url_error(i: int, url: str) -> InvalidImageError | None:
    """An error when `url`'s host is missing, unresolvable, or resolves to a non-public address (loopback, private,
    link-local, reserved...). The fetch re-resolves, so a host that flips between checks is not covered (documented
    in docs/SERVING.md); deployments that need that put an egress proxy in front."""
    host = urlsplit(url).hostname
    if not host:
        return InvalidImageError(f"query {i}: the image URL has no host")
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return InvalidImageError(f"query {i}: cannot resolve the image URL's host {host!r}")
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global:
            return InvalidImageError(
                f"query {i}: the image URL's host {host!r} is not a public address; this server fetches only "
                "public URLs (MMSEARCH_SERVE_FETCH_ALLOW_PRIVATE=1 allows private ones)"
            )
    return None


def _load_images(
    specs: list[QuerySpec | MMSearchError], service, refs: dict[int, str], client_urls: set[int]
) -> list[Any]:
    """Fetch and decode each query's image (thread pool); an error takes the query's slot. `client_urls` are the
    queries whose URL came from the client (not from an indexed product) and must pass the public-address check."""

    def fetch(i: int):
        if i in client_urls and (err := _public_url_error(i, refs[i])) is not None:
            return err
        try:
            ref = refs[i]
            resolve = service.thumbnails.resolve
            if i not in client_urls and resolve is not None:
                ref = resolve(ref)  # a stored ref: relative ones resolve under the catalogue root
            image = service.thumbnails.fetcher.open(ref)
        except MMSearchError as err:
            return err
        if image.format not in UPLOAD_FORMATS:
            return UnsupportedMediaTypeError(
                f"query {i}: image is {image.format}; expected one of {', '.join(sorted(UPLOAD_FORMATS))}"
            )
        return image

    order = sorted(refs)
    return dict(zip(order, [f.result() for f in service.thumbnails.fetcher.map(fetch, order)], strict=True))


async def read_batch(request: Request, service, pipeline) -> list[SearchRequest | MMSearchError]:
    """Parse, validate and fetch the images of one batch body; whole-body problems raise, query problems don't."""
    settings = service.settings
    body = await _json_body(request, settings)
    if not isinstance(body, dict) or set(body) != {"queries"} or not isinstance(body["queries"], list):
        raise InvalidQueryError('the body must be {"queries": [query, ...]}')
    queries = body["queries"]
    if not 1 <= len(queries) <= settings.serve_max_batch:
        raise InvalidQueryError(
            f"a batch holds 1 to {settings.serve_max_batch} queries (MMSEARCH_SERVE_MAX_BATCH), got {len(queries)}"
        )
    specs: list[QuerySpec | MMSearchError] = []
    for query in queries:
        try:
            spec = parse_query(query)
            if spec.image is not None and not spec.image.startswith(("http://", "https://")):
                raise InvalidImageError("image must be an http(s) URL here; upload files to POST /search")
            specs.append(spec)
        except MMSearchError as err:
            specs.append(err)
    ids = [s.image_id for s in specs if isinstance(s, QuerySpec) and s.image_id is not None]
    stored = {}
    if ids:
        stored = {h.id: h.image_url for h in await service.worker.run(pipeline.retriever.store.get, ids)}
    refs: dict[int, str] = {}
    out: list[SearchRequest | MMSearchError] = []
    for i, spec in enumerate(specs):
        if isinstance(spec, QuerySpec) and spec.image_id is not None and not stored.get(spec.image_id):
            spec = InvalidQueryError(f"image_id {spec.image_id!r} is not an indexed product with an image")
        if isinstance(spec, QuerySpec) and (spec.image or spec.image_id):
            refs[i] = spec.image or stored[spec.image_id]
        out.append(spec if isinstance(spec, MMSearchError) else spec.request)
    client_urls = set()
    if not settings.serve_fetch_allow_private:
        client_urls = {
            i for i, spec in enumerate(specs) if isinstance(spec, QuerySpec) and spec.image is not None
        }
    images = await run_in_threadpool(_load_images, specs, service, refs, client_urls) if refs else {}
    for i, image in images.items():
        out[i] = image if isinstance(image, MMSearchError) else replace(out[i], image=image)
    return out


__all__ = ["BATCH_BODY_SCHEMA", "QUERY_SCHEMA", "read_batch"]
