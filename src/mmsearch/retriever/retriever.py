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
from collections.abc import Sequence
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
    """Hits in retrieval order plus the time spent embedding and searching.

    For a query searched as part of a batch, the timings are the whole batch's (`batch_size` queries).
    """

    hits: list[Hit]
    mode: str
    timings: dict[str, float] = field(default_factory=dict)  # encode_ms, search_ms
    batch_size: int = 1


@dataclass
class QueryVectors:
    """Encoded queries: joint vectors and, when asked for, instruction vectors (the joint one where none)."""

    joint: np.ndarray  # (n, dim)
    text: np.ndarray | None = None  # (n, dim)
    encode_ms: float = 0.0

    def __len__(self) -> int:
        return len(self.joint)


def _group_key(opts: SearchOptions) -> tuple:
    filters = opts.filters
    expr = (
        filters.to_expr() if hasattr(filters, "to_expr") else repr(filters)
    )  # the store refuses non-filters
    if opts.mode == "joint":
        return ("joint", expr)
    if opts.mode == "fused":
        return ("fused", expr, opts.weights)
    # Hybrid fusion ranks each side's top-k, so a larger k changes the fused order: k is part of the group.
    return ("weighted", expr, opts.ranker, opts.weights, opts.rrf_k, opts.k)


class Retriever:
    """Embeds queries and searches a `ProductStore`, one query or a batch at a time."""

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
        return self.search_many([query], [options or SearchOptions()])[0]

    def search_many(
        self, queries: Sequence[Query], options: Sequence[SearchOptions]
    ) -> list[RetrievalResult]:
        """`search` for a batch: queries encoded in one pass, then one Milvus call per group of equal options."""
        if len(queries) != len(options):
            raise InvalidQueryError(
                f"got {len(queries)} queries and {len(options)} options; expected one each"
            )
        vectors = self.encode(queries, with_text=any(o.mode != "joint" for o in options))
        return self.search_vectors(vectors, options)

    def encode(self, queries: Sequence[Query], *, with_text: bool = True) -> QueryVectors:
        """Joint vectors for `queries` and, if `with_text`, their instruction vectors (the eval harness encodes
        once per run and searches every mode from these)."""
        t0 = time.perf_counter()
        joint = self.query_encoder.encode_many(queries)
        text = None
        if with_text:
            text = joint.copy()
            for i, vec in enumerate(self.query_encoder.encode_instructions(queries)):
                if vec is not None:
                    text[i] = vec
        return QueryVectors(joint, text, (time.perf_counter() - t0) * 1e3)

    def search_vectors(
        self, vectors: QueryVectors, options: Sequence[SearchOptions]
    ) -> list[RetrievalResult]:
        """Search already encoded queries; queries sharing mode, filters and fusion go in one Milvus call
        (dense modes with the largest k among them, each cut to its own k; hybrid groups share k too)."""
        if len(vectors) != len(options):
            raise InvalidQueryError(f"got {len(vectors)} query vectors and {len(options)} options")
        groups: dict[tuple, list[int]] = {}
        for i, opts in enumerate(options):
            if opts.mode != "joint" and vectors.text is None:
                raise InvalidQueryError(
                    f"mode {opts.mode!r} needs instruction vectors; encode with_text=True"
                )
            groups.setdefault(_group_key(opts), []).append(i)
        hits: list[list[Hit]] = [[] for _ in options]
        t0 = time.perf_counter()
        for idx in groups.values():
            first = options[idx[0]]
            k = max(options[i].k for i in idx)
            joint = vectors.joint[idx]  # (g, dim)
            if first.mode == "joint":
                found = self.store.search_batch(joint, k=k, filters=first.filters)
            elif first.mode == "weighted":
                found = self.store.hybrid_search_batch(
                    joint,
                    vectors.text[idx],
                    k=k,
                    filters=first.filters,
                    ranker=first.ranker,
                    weights=first.weights,
                    rrf_k=first.rrf_k,
                )
            else:
                found = self.store.search_batch(
                    _fuse(joint, vectors.text[idx], first.weights), k=k, filters=first.filters
                )
            for i, per_query in zip(idx, found, strict=True):
                hits[i] = list(per_query[: options[i].k])
        search_ms = (time.perf_counter() - t0) * 1e3
        timings = {"encode_ms": vectors.encode_ms, "search_ms": search_ms}
        return [
            RetrievalResult(hits=h, mode=o.mode, timings=dict(timings), batch_size=len(options))
            for h, o in zip(hits, options, strict=True)
        ]


def _fuse(joint: np.ndarray, text: np.ndarray, weights: tuple[float, float]) -> np.ndarray:
    """Row-wise w_img * joint + w_txt * text, re-normalised (the joint row where the sum is zero)."""
    w_img, w_txt = weights
    fused = w_img * joint + w_txt * text  # (n, dim)
    norms = np.linalg.norm(fused, axis=1, keepdims=True)  # (n, 1)
    return np.where(norms > 0, fused / np.where(norms > 0, norms, 1.0), joint).astype(np.float32)


__all__ = [
    "QueryVectors",
    "DEFAULT_WEIGHTS",
    "SEARCH_MODES",
    "RetrievalResult",
    "Retriever",
    "SearchMode",
    "SearchOptions",
]
