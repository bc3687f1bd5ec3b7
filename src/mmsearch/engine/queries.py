"""Checks on a search's arguments and query image, run before any model loads.

Entry points: `check_search_args(request, image=..., max_k=...)` returns the request with its filters as a
`ProductFilter`; `load_query_image(image, fetcher)` decodes a path, URL, bytes or PIL image with the byte and
pixel bounds. A bad argument or a missing image fails in milliseconds, not after the encoder has loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from PIL import Image

from mmsearch.errors import InvalidQueryError
from mmsearch.media import ImageFetcher, ImageSource, open_image
from mmsearch.pipelines import SearchRequest
from mmsearch.retriever import Query, SearchOptions
from mmsearch.store import ProductFilter


def check_search_args(request: SearchRequest, *, image: ImageSource | None, max_k: int) -> SearchRequest:
    """Validate everything about `request` that needs no model; raises `InvalidQueryError` naming the argument."""
    if image is None and not (request.instruction or "").strip():
        raise InvalidQueryError("a query needs an image, an instruction, or both; got neither")
    # Query checks the instruction's length; a placeholder stands in for an image not decoded yet.
    Query(image=None if image is None else b"", instruction=request.instruction)
    SearchOptions(
        k=request.k,
        mode=request.mode,
        weights=request.weights,
        ranker=request.ranker,
        rrf_k=request.rrf_k,
        max_k=max_k,
    )
    filters = request.filters
    if isinstance(filters, Mapping):
        filters = ProductFilter(**filters)
    elif filters is not None and not isinstance(filters, ProductFilter):
        raise InvalidQueryError(
            f"filters must be a ProductFilter or a mapping of its fields, got {type(filters).__name__}"
        )
    if not isinstance(request.rerank, bool):
        raise InvalidQueryError(f"rerank must be True or False, got {request.rerank!r}")
    return replace(request, filters=filters)


def load_query_image(image: ImageSource, fetcher: ImageFetcher) -> Image.Image:
    """The decoded query image; URLs are downloaded (cached), paths and bytes read with the fetcher's bounds."""
    if isinstance(image, Image.Image):
        return open_image(image, max_bytes=fetcher.max_bytes, max_pixels=fetcher.max_pixels)
    if isinstance(image, Path):
        image = str(image)
    return fetcher.open(image)


__all__ = ["check_search_args", "load_query_image"]
