"""HTTP endpoints: `POST /search`, `POST /search/batch`, `GET /images`, `GET /categories`, `GET /healthz`, and the
web page at `/`.

Entry point: `router`, included by `mmsearch.api.app.create_app`. Handlers hold no try/except: errors are
mapped to HTTP in `mmsearch.api.errors`. Model and Milvus work goes through the single inference worker.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from mmsearch.api.batch import BATCH_BODY_SCHEMA, read_batch
from mmsearch.api.dependencies import PipelineDep, SearchService, ServiceDep, SettingsDep
from mmsearch.api.errors import ImageUnavailableError, ProductNotFoundError, error_body
from mmsearch.api.forms import SEARCH_FORM_SCHEMA, read_search_form
from mmsearch.errors import MMSearchError
from mmsearch.pipelines import SearchRequest, SearchResult

router = APIRouter()

_ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    "required": ["error", "message"],
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {
        404: "unknown product id, or nothing indexed yet",
        413: "upload larger than the limit",
        415: "content type not accepted",
        422: "invalid query, filter or image",
        502: "the product image could not be read",
        503: "Milvus unavailable or locked, models not loaded, or the queue is full",
    }
    return {
        c: {"description": described[c], "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
        for c in codes
    }


def thumbnail_url(product_id: str) -> str:
    return "/images?id=" + quote(product_id, safe="")


def search_response(result: SearchResult) -> dict[str, Any]:
    """`SearchResult.to_dict()` for a client: every hit's `image_url` is this server's `/images?id=...` URL
    (the stored reference may be a path on the server, which never leaves it), and the query is echoed."""
    body = result.to_dict()
    for hit in body["hits"]:
        hit["image_url"] = hit["thumbnail_url"] = thumbnail_url(hit["id"])
    return body


@router.post(
    "/search",
    summary="Search products by image and/or instruction",
    openapi_extra={
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": SEARCH_FORM_SCHEMA}}}
    },
    responses=_errors(404, 413, 415, 422, 503),
)
async def search(
    request: Request,
    settings: SettingsDep,
    service: ServiceDep,
    pipeline: PipelineDep,
) -> dict[str, Any]:
    """Multipart form: `image` (file) and/or `instruction`, plus `k`, filters (`category`, `min_price`,
    `max_price`, `min_rating`), `mode`, `weights`, `ranker` and `rerank`. Returns the hits (titles, prices,
    scores, thumbnail URLs), the rerank status and reasons, before/after ranks and per-stage timings in ms."""
    search_request = await read_search_form(request, settings)
    result = await service.scheduler.search(pipeline, search_request)
    service.thumbnails.remember(result.hits)
    return search_response(result)


@router.post(
    "/search/batch",
    summary="Several searches in one JSON request (images as URLs or indexed product ids)",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": BATCH_BODY_SCHEMA}}}
    },
    responses=_errors(413, 415, 422, 503),
)
async def search_batch(request: Request, service: ServiceDep, pipeline: PipelineDep) -> dict[str, Any]:
    """JSON `{"queries": [...]}`, at most `MMSEARCH_SERVE_MAX_BATCH` (16) queries, each with the `POST /search`
    fields plus `image` (an http(s) URL the server fetches with the upload limits) or `image_id` (an indexed
    product). Answers `{"results": [...]}` in query order: each the `POST /search` body, or `{"error", "message"}`
    for a query that failed on its own. The queries join the server's shared batches."""
    requests = await read_batch(request, service, pipeline)
    valid = [r for r in requests if isinstance(r, SearchRequest)]
    found = iter(await service.scheduler.search_many(pipeline, valid) if valid else [])
    results: list[dict[str, Any]] = []
    for i, item in enumerate(requests):
        result = item if isinstance(item, MMSearchError) else next(found)
        if isinstance(result, MMSearchError):
            results.append({"index": i, **error_body(result.code, result.message)})
        else:
            service.thumbnails.remember(result.hits)
            results.append({"index": i, **search_response(result)})
    return {"results": results}


async def _thumbnail(product_id: str, service: SearchService) -> Response:
    ref = service.thumbnails.known_ref(product_id)
    if ref is None:
        pipeline = await service.ensure_pipeline()
        hits = await service.worker.run(pipeline.get, [product_id])
        if not hits:
            raise ProductNotFoundError(f"no product with id {product_id!r}")
        service.thumbnails.remember(hits)
        ref = hits[0].image_url
        if not ref:
            raise ImageUnavailableError(f"product {product_id!r} has no stored image reference")
    data = await run_in_threadpool(service.thumbnails.render, ref)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"})


@router.get(
    "/images",
    summary="Thumbnail of a product image (id as a query parameter: safe for any characters)",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **_errors(404, 502, 503)},
)
async def image_by_query(
    service: ServiceDep,
    id: Annotated[str, Query(min_length=1, max_length=2048, description="product id, any characters")],
) -> Response:
    return await _thumbnail(id, service)


@router.get(
    "/images/{product_id:path}",
    summary="Thumbnail of a product image (id percent-encoded in the path)",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **_errors(404, 502, 503)},
)
async def image_by_path(product_id: str, service: ServiceDep) -> Response:
    return await _thumbnail(product_id, service)


@router.get(
    "/categories",
    summary="Stored categories (main_category) with their image counts, most first",
    responses=_errors(404, 503),
)
async def categories(service: ServiceDep) -> dict[str, Any]:
    pipeline = await service.ensure_pipeline()
    counts = await service.worker.run(pipeline.retriever.store.categories)
    return {"categories": [{"name": name, "count": count} for name, count in counts.items()]}


@router.get("/healthz", summary="Milvus reachability, collection, row count, models loaded, queue")
async def healthz(service: ServiceDep) -> JSONResponse:
    body = await service.health()
    return JSONResponse(body, status_code=200 if body["status"] in ("ok", "busy") else 503)


@router.get("/", include_in_schema=False)
async def index_page() -> FileResponse:
    page = resources.files("mmsearch.api") / "static" / "index.html"
    return FileResponse(str(page), media_type="text/html")


__all__ = ["router", "search_response", "thumbnail_url"]
