"""Dense retrieval over the product index: query → joint embedding → Milvus (plain, hybrid or fused) → typed hits.

Entry points: `Retriever(encoder, store)` with built parts, or `Retriever.from_settings(settings)`.
Modes (compared by `mmsearch eval`):
- "joint": the image+instruction embedding against `image_vector` (the default, as in the reference notebook);
- "weighted": Milvus hybrid search over `image_vector` (joint query) and `text_vector` (instruction text query,
  the joint vector when there is no instruction), fused by a weighted or RRF ranker;
- "fused": the query-side weighted sum of the joint and instruction vectors, re-normalised, as one ANN search.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from mmsearch.errors import InvalidQueryError
from mmsearch.limits import DEFAULT_RRF_K, MAX_K, MAX_RRF_K
from mmsearch.retriever.query import Encoder, Query, QueryEncoder
from mmsearch.types import Hit

SearchMode = Literal["joint", "weighted", "fused"]
SEARCH_MODES: tuple[str, ...] = ("joint", "weighted", "fused")
RankerName = Literal["weighted", "rrf"]
DEFAULT_WEIGHTS = (0.7, 0.3)


@dataclass(frozen=True)
class SearchOptions:
    """How to search: k, filters, mode and fusion parameters. Validated on construction."""

    k: int = 10
    filters: object | None = None  # mmsearch.store.filters.ProductFilter
    mode: SearchMode = "joint"
    weights: tuple[float, float] = DEFAULT_WEIGHTS  # (image side, text side)
    ranker: RankerName = "weighted"
    rrf_k: int = DEFAULT_RRF_K
    max_k: int = MAX_K

    def __post_init__(self):
        if not isinstance(self.k, int) or isinstance(self.k, bool) or not 1 <= self.k <= self.max_k:
            raise InvalidQueryError(f"k must be an integer between 1 and {self.max_k}, got {self.k!r}")
        if self.mode not in SEARCH_MODES:
            raise InvalidQueryError(f"mode must be one of {', '.join(SEARCH_MODES)}; got {self.mode!r}")
        if self.ranker not in ("weighted", "rrf"):
            raise InvalidQueryError(f"ranker must be 'weighted' or 'rrf', got {self.ranker!r}")
        w = tuple(float(x) for x in self.weights)
        if len(w) != 2 or any(not math.isfinite(x) or x < 0 for x in w) or sum(w) <= 0:
            raise InvalidQueryError(
                f"weights must be two finite non-negative numbers (image, text) with a positive sum, got {self.weights!r}"
            )
        object.__setattr__(self, "weights", w)
        if (
            isinstance(self.rrf_k, bool)
            or not isinstance(self.rrf_k, int)
            or not 1 <= self.rrf_k <= MAX_RRF_K
        ):
            raise InvalidQueryError(f"rrf_k must be an integer between 1 and {MAX_RRF_K}, got {self.rrf_k!r}")


@dataclass
class RetrievalResult:
    """Hits in retrieval order plus the time spent embedding and searching."""

    hits: list[Hit]
    mode: str
    timings: dict[str, float] = field(default_factory=dict)  # encode_ms, search_ms


class Retriever:
    """Embeds queries and searches a `ProductStore`."""

    def __init__(
        self,
        encoder: Encoder,
        store,
        *,
        query_encoder: QueryEncoder | None = None,
        check_encoder: bool = True,
    ):
        self.encoder = encoder
        self.store = store
        self.query_encoder = query_encoder or QueryEncoder(encoder)
        if check_encoder:
            store.check_encoder(encoder_id=encoder.model_id, dim=encoder.dim)

    @classmethod
    def from_settings(cls, settings) -> Retriever:
        from mmsearch.pipelines.factory import build_encoder, build_store

        encoder = build_encoder(settings)
        store = build_store(settings)
        qe = QueryEncoder(
            encoder, max_image_bytes=settings.max_image_bytes, max_image_pixels=settings.max_image_pixels
        )
        return cls(encoder, store, query_encoder=qe)

    def search(self, query: Query, options: SearchOptions | None = None) -> RetrievalResult:
        """Return the top-k hits for `query` under `options` (default: joint mode, k=10)."""
        opts = options or SearchOptions()
        t0 = time.perf_counter()
        joint = self.query_encoder.encode(query)
        text_q = None
        if opts.mode != "joint":
            text_q = self.query_encoder.encode_instruction(query)
            if text_q is None:
                text_q = joint
        t1 = time.perf_counter()
        if opts.mode == "joint":
            hits = self.store.search(joint, k=opts.k, filters=opts.filters)
        elif opts.mode == "weighted":
            hits = self.store.hybrid_search(
                joint,
                text_q,
                k=opts.k,
                filters=opts.filters,
                ranker=opts.ranker,
                weights=opts.weights,
                rrf_k=opts.rrf_k,
            )
        else:
            w_img, w_txt = opts.weights
            fused = w_img * joint + w_txt * text_q  # (dim,)
            norm = float(np.linalg.norm(fused))
            fused = joint if norm == 0.0 else (fused / norm).astype(np.float32)
            hits = self.store.search(fused, k=opts.k, filters=opts.filters)
        t2 = time.perf_counter()
        return RetrievalResult(
            hits=list(hits),
            mode=opts.mode,
            timings={"encode_ms": (t1 - t0) * 1e3, "search_ms": (t2 - t1) * 1e3},
        )


__all__ = ["DEFAULT_WEIGHTS", "SEARCH_MODES", "RetrievalResult", "Retriever", "SearchMode", "SearchOptions"]
