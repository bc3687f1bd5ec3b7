"""Retrieve → (optional) rerank, with per-stage timings. The CLI, the API and the notebook all run this.

Entry points: `SearchPipeline(retriever, reranker)` with built parts, or `SearchPipeline.from_settings(settings)`;
then `pipeline.run(SearchRequest(...)) -> SearchResult`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from mmsearch.errors import InvalidQueryError
from mmsearch.media.decode import ImageSource
from mmsearch.retriever import Query, Retriever, SearchOptions
from mmsearch.retriever.retriever import DEFAULT_WEIGHTS
from mmsearch.types import Hit


@dataclass(frozen=True)
class SearchRequest:
    """One search: the query, retrieval options and whether to rerank."""

    image: ImageSource | None = None
    instruction: str = ""
    k: int = 9
    filters: Any = None  # mmsearch.store.ProductFilter
    mode: str = "joint"
    weights: tuple[float, float] = DEFAULT_WEIGHTS
    ranker: str = "weighted"
    rrf_k: int = 60
    rerank: bool = False


@dataclass
class SearchResult:
    """Final hits, the retrieval order they came from, the reranker's verdict and per-stage timings (ms)."""

    hits: list[Hit]
    retrieved: list[Hit]
    mode: str
    rerank: Any = None  # mmsearch.reranker.RerankResult | None
    timings: dict[str, float] = field(default_factory=dict)
    smoke: bool = False

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
            },
            "timings": dict(self.timings),
        }


class SearchPipeline:
    """Puts a `Retriever` and an optional `Reranker` together; builds nothing itself."""

    def __init__(self, retriever: Retriever, reranker=None, *, max_k: int = 50, smoke: bool = False):
        self.retriever = retriever
        self.reranker = reranker
        self.max_k = max_k
        self.smoke = smoke

    @classmethod
    def from_settings(cls, settings, *, with_reranker: bool = True) -> SearchPipeline:
        from mmsearch.pipelines.factory import build_reranker

        reranker = build_reranker(settings) if with_reranker else None
        return cls(Retriever.from_settings(settings), reranker, max_k=settings.max_k, smoke=settings.smoke)

    def run(self, request: SearchRequest) -> SearchResult:
        t0 = time.perf_counter()
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
        )
        # Decode once: the same image goes to the encoder and to the reranker's panel.
        image = None
        if request.image is not None:
            image = self.retriever.query_encoder.load_image(request.image)
        query = Query(image=image, instruction=request.instruction)
        retrieved = self.retriever.search(query, options)
        timings = dict(retrieved.timings)
        hits = list(retrieved.hits)
        rerank = None
        if request.rerank and len(hits) > 1:
            from mmsearch.reranker.base import RerankQuery

            t1 = time.perf_counter()
            rerank = self.reranker.rerank(RerankQuery(image=image, instruction=query.instruction), hits)
            timings["rerank_ms"] = (time.perf_counter() - t1) * 1e3
            for key in ("prefill_ms", "decode_ms"):
                if key in rerank.timings:
                    timings[f"rerank_{key}"] = rerank.timings[key]
            hits = list(rerank.hits)
        timings["total_ms"] = (time.perf_counter() - t0) * 1e3
        return SearchResult(
            hits=hits,
            retrieved=list(retrieved.hits),
            mode=options.mode,
            rerank=rerank,
            timings=timings,
            smoke=self.smoke,
        )


__all__ = ["SearchPipeline", "SearchRequest", "SearchResult"]
