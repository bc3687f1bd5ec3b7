"""Retrieve → (optional) rerank, with per-stage timings. The CLI, the API and the notebook all run this.

Entry point: `SearchPipeline(retriever, reranker)` with built parts (`mmsearch.engine` builds them from settings);
then `pipeline.run(SearchRequest(...)) -> SearchResult`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mmsearch.errors import InvalidQueryError, MMSearchError
from mmsearch.limits import DEFAULT_K, DEFAULT_MAX_K, DEFAULT_RRF_K
from mmsearch.media.decode import ImageSource
from mmsearch.reranker.base import Reranker, RerankQuery, RerankResult
from mmsearch.retriever import Query, Retriever, SearchOptions
from mmsearch.retriever.retriever import DEFAULT_WEIGHTS
from mmsearch.store.filters import ProductFilter
from mmsearch.types import Hit


@dataclass(frozen=True)
class SearchRequest:
    """One search: the query, retrieval options and whether to rerank."""

    image: ImageSource | None = None
    instruction: str = ""
    k: int = DEFAULT_K
    filters: ProductFilter | None = None
    mode: str | None = None  # None: the encoder's default mode
    weights: tuple[float, float] = DEFAULT_WEIGHTS
    ranker: str = "weighted"
    rrf_k: int = DEFAULT_RRF_K
    rerank: bool = False
    one_per_product: bool = True  # one slot per product (its best image); False lists every matching image

    def describe(self) -> dict[str, Any]:
        """The query as the API and `mmsearch search --json` echo it (the image itself is left out)."""
        filters = self.filters
        return {
            "has_image": self.image is not None,
            "instruction": self.instruction,
            "k": self.k,
            "mode": self.mode,
            "weights": list(self.weights),
            "ranker": self.ranker,
            "one_per_product": self.one_per_product,
            "rerank": self.rerank,
            "filters": None
            if filters is None or getattr(filters, "is_empty", False)
            else filters.model_dump(exclude_none=True),
        }


@dataclass
class SearchResult:
    """Final hits, the retrieval order they came from, the reranker's verdict and per-stage timings (ms)."""

    hits: list[Hit]
    retrieved: list[Hit]
    mode: str
    rerank: RerankResult | None = None
    timings: dict[str, float] = field(default_factory=dict)
    smoke: bool = False
    request: SearchRequest | None = None
    query: Query | None = field(default=None, repr=False)  # with the decoded image, for the reranker
    batch_size: int = 1  # queries retrieved together with this one

    @property
    def rerank_status(self) -> str:
        return "off" if self.rerank is None else self.rerank.status

    def rank_changes(self) -> list[dict[str, Any]]:
        """For each final hit: its 1-based rank before and after reranking."""
        before = {h.id: i + 1 for i, h in enumerate(self.retrieved)}
        return [{"id": h.id, "before": before[h.id], "after": i + 1} for i, h in enumerate(self.hits)]

    def to_dict(self) -> dict[str, Any]:
        rr = self.rerank
        return {
            "smoke": self.smoke,
            "mode": self.mode,
            "hits": [h.to_dict() | {"rank": i + 1} for i, h in enumerate(self.hits)],
            "rank_changes": self.rank_changes(),
            "rerank": None
            if rr is None
            else {
                "status": rr.status,
                "reason": rr.reason,
                "reasons": rr.reasons,
                "raw_output": rr.raw_output,
                "order": list(rr.order),
                "stats": dict(getattr(rr, "stats", {}) or {}),
                "missing_images": list(getattr(rr, "missing_images", []) or []),
            },
            "timings": dict(self.timings),
            # The mode actually used: a request that named none got the encoder's default.
            "query": None if self.request is None else self.request.describe() | {"mode": self.mode},
        }


class SearchPipeline:
    """Puts a `Retriever` and an optional `Reranker` together; builds nothing itself."""

    def __init__(
        self,
        retriever: Retriever,
        reranker: Reranker | None = None,
        *,
        max_k: int = DEFAULT_MAX_K,
        smoke: bool = False,
    ):
        self.retriever = retriever
        self.reranker = reranker
        self.max_k = max_k
        self.smoke = smoke

    def _prepare(self, request: SearchRequest) -> tuple[Query, SearchOptions]:
        """Validate one request and decode its image (once: it goes to the encoder and the reranker's panel)."""
        if request.rerank and self.reranker is None:
            raise InvalidQueryError("reranking was requested but this pipeline has no reranker loaded")
        options = SearchOptions(
            k=request.k,
            filters=request.filters,
            mode=request.mode,
            weights=request.weights,
            ranker=request.ranker,
            rrf_k=request.rrf_k,
            max_k=self.max_k,
            one_per_product=request.one_per_product,
        )
        image = None
        if request.image is not None:
            image = self.retriever.query_encoder.load_image(request.image)
        return Query(image=image, instruction=request.instruction), options

    def retrieve_many(self, requests: Sequence[SearchRequest]) -> list[SearchResult | MMSearchError]:
        """Retrieval (no rerank) for a batch: one encoder pass, one Milvus call per group of equal options.

        A request that is invalid (bad options, unreadable image) gets its error in its slot; the others go on.
        An error of the batch itself (Milvus down) fills every slot that was searched.
        """
        t0 = time.perf_counter()
        out: list[SearchResult | MMSearchError | None] = [None] * len(requests)
        ready: list[tuple[int, Query, SearchOptions]] = []
        for i, request in enumerate(requests):
            try:
                ready.append((i, *self._prepare(request)))
            except MMSearchError as err:
                out[i] = err
        if ready:
            try:
                found = self.retriever.search_many([q for _, q, _ in ready], [o for _, _, o in ready])
            except MMSearchError as err:
                found = [err] * len(ready)
            total_ms = (time.perf_counter() - t0) * 1e3
            for (i, query, _options), result in zip(ready, found, strict=True):
                if isinstance(result, MMSearchError):
                    out[i] = result
                    continue
                out[i] = SearchResult(
                    hits=list(result.hits),
                    retrieved=list(result.hits),
                    mode=result.mode,
                    timings={**result.timings, "total_ms": total_ms},
                    smoke=self.smoke,
                    request=requests[i],
                    query=query,
                    batch_size=len(ready),
                )
        return out  # type: ignore[return-value]  # every slot is filled above

    def rerank(self, result: SearchResult) -> SearchResult:
        """Rerank a retrieved result in place (the reranker's verdict, timings) and return it."""
        if self.reranker is None:
            raise InvalidQueryError("reranking was requested but this pipeline has no reranker loaded")
        if len(result.hits) <= 1 or result.query is None:
            return result
        t1 = time.perf_counter()
        query = result.query
        rerank = self.reranker.rerank(
            RerankQuery(image=query.image, instruction=query.instruction), result.hits
        )
        result.timings["rerank_ms"] = (time.perf_counter() - t1) * 1e3
        for key in ("prefill_ms", "decode_ms"):
            if key in rerank.timings:
                result.timings[f"rerank_{key}"] = rerank.timings[key]
        result.timings["total_ms"] = result.timings.get("total_ms", 0.0) + result.timings["rerank_ms"]
        result.rerank = rerank
        result.hits = list(rerank.hits)
        return result

    def run_many(self, requests: Sequence[SearchRequest]) -> list[SearchResult | MMSearchError]:
        """`retrieve_many`, then a rerank of each result whose request asked for one."""
        out = self.retrieve_many(requests)
        for i, (request, result) in enumerate(zip(requests, out, strict=True)):
            if request.rerank and isinstance(result, SearchResult):
                try:
                    out[i] = self.rerank(result)
                except MMSearchError as err:
                    out[i] = err
        return out

    def run(self, request: SearchRequest) -> SearchResult:
        """One search: retrieve, then rerank if the request asks for it. Raises the request's error."""
        result = self.run_many([request])[0]
        if isinstance(result, MMSearchError):
            raise result
        return result

    def get(self, ids: list[str]) -> list[Hit]:
        """Stored products by id, in the order asked (missing ids left out)."""
        return self.retriever.store.get(ids)

    def info(self) -> dict[str, Any]:
        """Where the store is and what it holds (for `/healthz`)."""
        return self.retriever.store.info()

    def close(self) -> None:
        """Close the retriever (and so its store). The models need no closing."""
        self.retriever.close()

    def __enter__(self) -> SearchPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["SearchPipeline", "SearchRequest", "SearchResult"]
