"""Hybrid search: an image-vector search and a title-vector search fused inside Milvus (weighted or RRF).

Entry point: `ProductStore.hybrid_search(...)` / `.hybrid_search_batch(...)`, which `HybridSearchMixin` provides;
`fusion_ranker(name, weights, rrf_k)` builds and checks the ranker. Needs Milvus >= 2.4 or Milvus Lite.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pymilvus import AnnSearchRequest, RRFRanker, WeightedRanker

from mmsearch.errors import InvalidQueryError, StoreError
from mmsearch.limits import DEFAULT_RRF_K, MAX_RRF_K
from mmsearch.store.filters import ProductFilter
from mmsearch.store.rows import as_queries, check_k, one_query, row_to_hit
from mmsearch.store.schema import IMAGE_VECTOR, PRODUCT_KEY, SCALAR_FIELDS, TEXT_VECTOR, TITLE_SPARSE
from mmsearch.types import Hit


def fusion_ranker(ranker: str, weights: tuple[float, float], rrf_k: int) -> WeightedRanker | RRFRanker:
    if ranker == "weighted":
        if len(weights) != 2 or not all(isinstance(w, int | float) and math.isfinite(w) for w in weights):
            raise InvalidQueryError(f"weights must be two finite numbers, got {weights!r}")
        return WeightedRanker(float(weights[0]), float(weights[1]))
    if ranker == "rrf":
        if isinstance(rrf_k, bool) or not isinstance(rrf_k, int) or not 1 <= rrf_k <= MAX_RRF_K:
            raise InvalidQueryError(f"rrf_k must be an integer between 1 and {MAX_RRF_K}, got {rrf_k!r}")
        return RRFRanker(rrf_k)
    raise InvalidQueryError(f"ranker must be 'weighted' or 'rrf', got {ranker!r}")


class HybridSearchMixin:
    """`hybrid_search` and `hybrid_search_batch` for `ProductStore` (uses its connection, checks and call wrapper)."""

    def hybrid_search(
        self,
        image_vector: np.ndarray,
        text_vector: np.ndarray,
        *,
        k: int = 10,
        filters: ProductFilter | None = None,
        ranker: Literal["weighted", "rrf"] = "weighted",
        weights: tuple[float, float] = (0.7, 0.3),
        rrf_k: int = DEFAULT_RRF_K,
        consistency: str | None = None,
        one_per_product: bool = False,
    ) -> list[Hit]:
        """Fuse an `image_vector` search and a `text_vector` search in Milvus (needs Milvus >= 2.4 or Lite).

        `weighted` scores are w_img * sim_img + w_txt * sim_txt; `rrf` scores are sum of 1 / (rrf_k + rank).
        `one_per_product`: each product takes one slot, its best image.
        """
        stamp = self._ready()
        images, texts = (
            one_query("image_vector", image_vector, stamp.dim),
            one_query("text_vector", text_vector, int(stamp.title_dim)),
        )
        return self.hybrid_search_batch(
            images,
            texts,
            k=k,
            filters=filters,
            ranker=ranker,
            weights=weights,
            rrf_k=rrf_k,
            consistency=consistency,
            one_per_product=one_per_product,
        )[0]

    def hybrid_search_batch(
        self,
        image_vectors: np.ndarray,
        text_vectors: np.ndarray,
        *,
        k: int = 10,
        filters: ProductFilter | None = None,
        ranker: Literal["weighted", "rrf"] = "weighted",
        weights: tuple[float, float] = (0.7, 0.3),
        rrf_k: int = DEFAULT_RRF_K,
        consistency: str | None = None,
        one_per_product: bool = False,
    ) -> list[list[Hit]]:
        """`hybrid_search` for nq queries at once (rows of both (nq, dim) arrays pair up), in one Milvus call."""
        stamp = self._ready()
        if not stamp.text_vector:
            raise StoreError(
                f"collection {self.collection!r} at {self.uri} has no {TEXT_VECTOR}: it was created on a Milvus "
                "server without multi-vector support (< 2.4). Hybrid search needs Milvus >= 2.4 or Milvus Lite."
            )
        image_q = as_queries("image_vectors", image_vectors, stamp.dim)
        text_q = as_queries("text_vectors", text_vectors, int(stamp.title_dim))
        if len(image_q) != len(text_q):
            raise InvalidQueryError(
                f"image_vectors and text_vectors must have the same number of rows, "
                f"got {len(image_q)} and {len(text_q)}"
            )
        k = check_k(k)
        fuse = fusion_ranker(ranker, weights, rrf_k)
        expr = self._filter_expr(filters)
        level = self._level(consistency)
        if len(image_q) == 0:
            return []
        dense = [(IMAGE_VECTOR, image_q.tolist()), (TEXT_VECTOR, text_q.tolist())]
        return self._fused(dense, fuse, k, expr, level, stamp, one_per_product)

    def _fused(
        self,
        requests: list[tuple[str, list[Any]]],
        fuse: WeightedRanker | RRFRanker,
        k: int,
        expr: str,
        level: str,
        stamp,
        distinct: bool,
    ) -> list[list[Hit]]:
        """One Milvus hybrid_search over (field, queries) pairs; the sparse BM25 field gets the BM25 metric."""

        def run(limit: int, group: bool = False) -> list[list[Hit]]:
            dense_params = self._search_params(limit)
            anns = [
                AnnSearchRequest(
                    data=data,
                    anns_field=name,
                    param={"metric_type": "BM25"} if name == TITLE_SPARSE else dense_params,
                    limit=limit,
                    expr=expr or None,
                )
                for name, data in requests
            ]
            with self._call("hybrid_search"):
                results = self._client.hybrid_search(
                    self.collection,
                    anns,
                    fuse,
                    limit=limit,
                    output_fields=list(SCALAR_FIELDS),
                    timeout=self.timeout,
                    consistency_level=level,
                    **({"group_by_field": PRODUCT_KEY} if group else {}),
                )
            return [[row_to_hit(row, row["distance"]) for row in per_query] for per_query in results]

        return self._distinct(run, k, stamp, hybrid=True) if distinct else run(k)


__all__ = ["HybridSearchMixin", "fusion_ranker"]
