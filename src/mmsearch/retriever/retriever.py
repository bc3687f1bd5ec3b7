"""Dense retrieval over the product index: query → joint embedding → Milvus (plain, hybrid or fused) → typed hits.

Entry point: `Retriever(encoder, store, title_encoder=...)` with built parts (`mmsearch.engine` builds them from
settings); it owns the store from then on and closes it in `close()`.
Modes (compared by `mmsearch eval`; `encoder.capabilities` says which apply, `encoder.default_mode` is used when
a request names none):
- "joint": the image+instruction embedding against `image_vector` (the default with Visualized BGE, as in the
  reference notebook); a dual encoder (CLIP, SigLIP) has no such embedding and refuses it;
- "weighted": Milvus hybrid search over `image_vector` (the image-side query vector) and `text_vector` (the
  instruction through the title encoder), fused by a weighted or RRF ranker. Without an instruction the image-side
  vector also queries `text_vector` when titles share its space, else the search is over `image_vector` alone;
- "fused": the query-side weighted sum of the image-side vector and the instruction's vector from the image-text
  encoder's own text tower, re-normalised, as one ANN search over `image_vector` (the default with CLIP/SigLIP);
- "hybrid-bm25": Milvus hybrid search fusing the image-side vector against `image_vector` with the instruction's
  BM25 match on product titles (a Milvus BM25 function; Milvus >= 2.5 or Lite), by a weighted (dense, lexical) or
  RRF ranker. Brand and model words ("OtterBox", "iPhone 15") that a dense vector blurs match exactly here.
Every mode gives one slot per product (its best-scoring image) unless `one_per_product=False`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from mmsearch.errors import InvalidQueryError
from mmsearch.limits import DEFAULT_RRF_K, MAX_K, MAX_RRF_K
from mmsearch.models.base import Encoder, SameSpaceTitles, TitleEncoder
from mmsearch.retriever.query import Query, QueryEncoder
from mmsearch.types import Hit

SearchMode = Literal["joint", "weighted", "fused", "hybrid-bm25"]
SEARCH_MODES: tuple[str, ...] = ("joint", "weighted", "fused", "hybrid-bm25")
# Modes that search with the instruction's vectors (hybrid-bm25 uses its words instead).
TEXT_VECTOR_MODES = ("weighted", "fused")
RankerName = Literal["weighted", "rrf"]
DEFAULT_WEIGHTS = (0.7, 0.3)


@dataclass(frozen=True)
class SearchOptions:
    """How to search: k, filters, mode and fusion parameters. Validated on construction."""

    k: int = 10
    filters: object | None = None  # mmsearch.store.filters.ProductFilter
    mode: SearchMode | None = (
        None  # None: the encoder's default (joint for Visualized BGE, fused for CLIP/SigLIP)
    )
    weights: tuple[float, float] = DEFAULT_WEIGHTS  # (image side, text side); hybrid-bm25: (dense, lexical)
    ranker: RankerName = "weighted"
    rrf_k: int = DEFAULT_RRF_K
    max_k: int = MAX_K
    one_per_product: bool = True  # one slot per product (parent_asin), its best-scoring image

    def __post_init__(self):
        if not isinstance(self.k, int) or isinstance(self.k, bool) or not 1 <= self.k <= self.max_k:
            raise InvalidQueryError(f"k must be an integer between 1 and {self.max_k}, got {self.k!r}")
        if self.mode is not None and self.mode not in SEARCH_MODES:
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
    """Encoded queries: image-side vectors and, when asked for, instruction vectors in the image space (the
    image-side one where none) and through the title encoder (`has_title` False where a row has none)."""

    joint: np.ndarray  # (n, dim)
    text: np.ndarray | None = None  # (n, dim)
    encode_ms: float = 0.0
    titles: np.ndarray | None = None  # (n, title_dim)
    has_title: np.ndarray | None = None  # (n,) bool
    instructions: list[str] = field(default_factory=list)  # the words hybrid-bm25 matches against titles

    def __len__(self) -> int:
        return len(self.joint)


def _group_key(opts: SearchOptions) -> tuple:
    filters = opts.filters
    expr = (
        filters.to_expr() if hasattr(filters, "to_expr") else repr(filters)
    )  # the store refuses non-filters
    if opts.mode == "joint":
        return ("joint", expr, opts.one_per_product)
    if opts.mode == "fused":
        return ("fused", expr, opts.weights, opts.one_per_product)
    # Hybrid fusion ranks each side's top-k, so a larger k changes the fused order: k is part of the group.
    return (opts.mode, expr, opts.ranker, opts.weights, opts.rrf_k, opts.k, opts.one_per_product)


class Retriever:
    """Embeds queries and searches a `ProductStore`, one query or a batch at a time."""

    def __init__(
        self,
        encoder: Encoder,
        store,
        *,
        query_encoder: QueryEncoder | None = None,
        title_encoder: TitleEncoder | None = None,
        check_encoder: bool = True,
    ):
        self.encoder = encoder
        self.store = store
        self.query_encoder = query_encoder or QueryEncoder(encoder)
        self.title_encoder = title_encoder or SameSpaceTitles(encoder)
        if check_encoder:
            store.check_encoder(
                encoder_id=encoder.model_id,
                dim=encoder.dim,
                title_encoder_id=self.title_encoder.model_id,
                title_dim=self.title_encoder.dim,
            )

    def resolve(self, options: SearchOptions) -> SearchOptions:
        """`options` with its mode filled in (the encoder's default); `UnsupportedModeError` for a mode the
        encoder cannot serve (joint with CLIP/SigLIP)."""
        mode = options.mode or self.encoder.default_mode
        self.encoder.check_mode(mode)
        return options if mode == options.mode else replace(options, mode=mode)

    def search(self, query: Query, options: SearchOptions | None = None) -> RetrievalResult:
        """Return the top-k hits for `query` under `options` (default: the encoder's default mode, k=10)."""
        return self.search_many([query], [options or SearchOptions()])[0]

    def search_many(
        self, queries: Sequence[Query], options: Sequence[SearchOptions]
    ) -> list[RetrievalResult]:
        """`search` for a batch: queries encoded in one pass, then one Milvus call per group of equal options."""
        if len(queries) != len(options):
            raise InvalidQueryError(
                f"got {len(queries)} queries and {len(options)} options; expected one each"
            )
        options = [self.resolve(o) for o in options]
        vectors = self.encode(queries, with_text=any(o.mode in TEXT_VECTOR_MODES for o in options))
        return self.search_vectors(vectors, options)

    def encode(self, queries: Sequence[Query], *, with_text: bool = True) -> QueryVectors:
        """Joint vectors for `queries` and, if `with_text`, their instruction vectors (the eval harness encodes
        once per run and searches every mode from these)."""
        t0 = time.perf_counter()
        joint = self.query_encoder.encode_many(queries)
        text = titles = has_title = None
        if with_text:
            text = joint.copy()
            for i, vec in enumerate(self.query_encoder.encode_instructions(queries)):
                if vec is not None:
                    text[i] = vec
            titles, has_title = self._title_queries(queries, joint, text)
        instructions = [q.instruction for q in queries]
        return QueryVectors(joint, text, (time.perf_counter() - t0) * 1e3, titles, has_title, instructions)

    def _title_queries(
        self, queries: Sequence[Query], joint: np.ndarray, text: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The `text_vector` queries: instructions through the title encoder. Without an instruction a row gets
        the image-side vector when titles share its space, else none (`has_title` False)."""
        if self.title_encoder.same_space_as_images:
            return text, np.ones(len(queries), dtype=bool)  # the same text tower: reuse its vectors
        has_title = np.array([bool(q.instruction) for q in queries], dtype=bool)
        titles = np.zeros((len(queries), self.title_encoder.dim), dtype=np.float32)
        idx = np.flatnonzero(has_title)
        if len(idx):
            titles[idx] = self.title_encoder.encode_queries([queries[i].instruction for i in idx])
        return titles, has_title

    def _weighted(
        self, vectors: QueryVectors, idx: list[int], opts: SearchOptions, k: int
    ) -> list[list[Hit]]:
        """Hybrid search for the rows with a title query; the others search `image_vector` alone."""
        found: list[list[Hit]] = [[] for _ in idx]
        hybrid, plain = _weighted_rows(vectors, idx)
        if hybrid:
            rows = [idx[j] for j in hybrid]
            titles = vectors.titles if vectors.titles is not None else vectors.text
            results = self.store.hybrid_search_batch(
                vectors.joint[rows],
                titles[rows],
                k=k,
                filters=opts.filters,
                ranker=opts.ranker,
                weights=opts.weights,
                rrf_k=opts.rrf_k,
                one_per_product=opts.one_per_product,
            )
            for j, hits in zip(hybrid, results, strict=True):
                found[j] = hits
        if plain:
            results = self.store.search_batch(
                vectors.joint[[idx[j] for j in plain]],
                k=k,
                filters=opts.filters,
                one_per_product=opts.one_per_product,
            )
            for j, hits in zip(plain, results, strict=True):
                found[j] = hits
        return found

    def search_vectors(
        self, vectors: QueryVectors, options: Sequence[SearchOptions]
    ) -> list[RetrievalResult]:
        """Search already encoded queries; queries sharing mode, filters and fusion go in one Milvus call
        (dense modes with the largest k among them, each cut to its own k; hybrid groups share k too)."""
        if len(vectors) != len(options):
            raise InvalidQueryError(f"got {len(vectors)} query vectors and {len(options)} options")
        options = [self.resolve(o) for o in options]
        groups: dict[tuple, list[int]] = {}
        for i, opts in enumerate(options):
            if opts.mode in TEXT_VECTOR_MODES and vectors.text is None:
                raise InvalidQueryError(
                    f"mode {opts.mode!r} needs instruction vectors; encode with_text=True"
                )
            if opts.mode == "hybrid-bm25" and not (vectors.instructions[i : i + 1] or [""])[0].strip():
                raise InvalidQueryError(
                    "mode hybrid-bm25 matches the instruction's words against product titles; this query has "
                    "no instruction (use another mode for an image alone)"
                )
            groups.setdefault(_group_key(opts), []).append(i)
        hits: list[list[Hit]] = [[] for _ in options]
        t0 = time.perf_counter()
        for idx in groups.values():
            first = options[idx[0]]
            k = max(options[i].k for i in idx)
            joint = vectors.joint[idx]  # (g, dim)
            common = {"k": k, "filters": first.filters, "one_per_product": first.one_per_product}
            if first.mode == "joint":
                found = self.store.search_batch(joint, **common)
            elif first.mode == "weighted":
                found = self._weighted(vectors, idx, first, k)
            elif first.mode == "hybrid-bm25":
                found = self.store.lexical_search_batch(
                    joint,
                    [vectors.instructions[i] for i in idx],
                    ranker=first.ranker,
                    weights=first.weights,
                    rrf_k=first.rrf_k,
                    **common,
                )
            else:
                found = self.store.search_batch(_fuse(joint, vectors.text[idx], first.weights), **common)
            category = getattr(first.filters, "category", None)
            if category and not any(found):
                # Nothing matched: if the category itself is unknown, say so with the closest names.
                self.store.check_category(category)
            for i, per_query in zip(idx, found, strict=True):
                hits[i] = list(per_query[: options[i].k])
        search_ms = (time.perf_counter() - t0) * 1e3
        timings = {"encode_ms": vectors.encode_ms, "search_ms": search_ms}
        return [
            RetrievalResult(hits=h, mode=o.mode, timings=dict(timings), batch_size=len(options))
            for h, o in zip(hits, options, strict=True)
        ]

    def close(self) -> None:
        """Close the store (a Milvus Lite database is released for other processes)."""
        close = getattr(self.store, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _weighted_rows(vectors: QueryVectors, idx: list[int]) -> tuple[list[int], list[int]]:
    """Positions (within `idx`) of the rows with a title query and of those without."""
    has = vectors.has_title if vectors.has_title is not None else np.ones(len(vectors), dtype=bool)
    hybrid = [j for j, i in enumerate(idx) if has[i]]
    return hybrid, [j for j, i in enumerate(idx) if not has[i]]


def _fuse(joint: np.ndarray, text: np.ndarray, weights: tuple[float, float]) -> np.ndarray:
    """Row-wise w_img * joint + w_txt * text, re-normalised (the joint row where the sum is zero)."""
    w_img, w_txt = weights
    fused = w_img * joint + w_txt * text  # (n, dim)
    norms = np.linalg.norm(fused, axis=1, keepdims=True)  # (n, 1)
    return np.where(norms > 0, fused / np.where(norms > 0, norms, 1.0), joint).astype(np.float32)


__all__ = [
    "TEXT_VECTOR_MODES",
    "QueryVectors",
    "DEFAULT_WEIGHTS",
    "SEARCH_MODES",
    "RetrievalResult",
    "Retriever",
    "SearchMode",
    "SearchOptions",
]
