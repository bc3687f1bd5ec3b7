"""Lexical + visual fusion: the instruction's BM25 match on product titles fused with the dense image vector.

Entry point: `ProductStore.lexical_search(vector, text, ...)` / `.lexical_search_batch(...)`, which
`LexicalSearchMixin` provides. The BM25 side is Milvus' own: a BM25 `Function` over the analysed `title` fills the
sparse `title_sparse` field at insert time and turns the query text into a sparse vector at search time, so
mmsearch never tokenises. Needs Milvus >= 2.5 or Milvus Lite 3.x, and a collection created with the field.

Milvus Lite 3.2.2 specifics (checked here): BM25 statistics are kept per segment; a BM25-only search reports
negated scores (more negative is better), while hybrid search normalises them, so fused scores are comparable
with the dense modes' (weighted ranker: in [0, 1]; RRF: sum of 1 / (rrf_k + rank)). Text with no indexed word
("the", "zzzz") matches nothing, and the dense side alone decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from mmsearch.errors import InvalidQueryError
from mmsearch.limits import DEFAULT_RRF_K
from mmsearch.store.filters import ProductFilter
from mmsearch.store.hybrid import fusion_ranker
from mmsearch.store.rows import as_queries, check_k, one_query
from mmsearch.store.schema import IMAGE_VECTOR, TITLE_SPARSE
from mmsearch.types import Hit


class LexicalSearchMixin:
    """`lexical_search` and `lexical_search_batch` for `ProductStore` (uses its connection and hybrid runner)."""

    def lexical_search(
        self,
        vector: np.ndarray,
        text: str,
        *,
        k: int = 10,
        filters: ProductFilter | None = None,
        ranker: Literal["weighted", "rrf"] = "rrf",
        weights: tuple[float, float] = (0.7, 0.3),
        rrf_k: int = DEFAULT_RRF_K,
        consistency: str | None = None,
        one_per_product: bool = False,
    ) -> list[Hit]:
        """Fuse a dense `image_vector` search for `vector` (dim,) with a BM25 match of `text` on titles.

        `weights` are (dense, lexical) for the weighted ranker. Raises `FeatureUnavailableError`, saying how to
        fix it, on a server < 2.5 or a collection indexed without the BM25 field. `one_per_product`: each
        product takes one slot, its best image.
        """
        query = one_query("vector", vector, self._ready().dim)
        return self.lexical_search_batch(
            query,
            [text],
            k=k,
            filters=filters,
            ranker=ranker,
            weights=weights,
            rrf_k=rrf_k,
            consistency=consistency,
            one_per_product=one_per_product,
        )[0]

    def lexical_search_batch(
        self,
        vectors: np.ndarray,
        texts: Sequence[str],
        *,
        k: int = 10,
        filters: ProductFilter | None = None,
        ranker: Literal["weighted", "rrf"] = "rrf",
        weights: tuple[float, float] = (0.7, 0.3),
        rrf_k: int = DEFAULT_RRF_K,
        consistency: str | None = None,
        one_per_product: bool = False,
    ) -> list[list[Hit]]:
        """`lexical_search` for nq queries in one Milvus call: rows of `vectors` (nq, dim) pair up with `texts`."""
        stamp = self._ready()
        self._check_bm25(stamp)
        queries = as_queries("vectors", vectors, stamp.dim)
        texts = list(texts)
        if len(texts) != len(queries) or not all(isinstance(t, str) and t.strip() for t in texts):
            raise InvalidQueryError(
                f"lexical search needs one non-empty text per query vector: got {len(texts)} texts for "
                f"{len(queries)} vectors"
            )
        k = check_k(k)
        fuse = fusion_ranker(ranker, weights, rrf_k)
        expr = self._filter_expr(filters)
        level = self._level(consistency)
        if len(queries) == 0:
            return []
        requests = [(IMAGE_VECTOR, queries.tolist()), (TITLE_SPARSE, texts)]
        return self._fused(requests, fuse, k, expr, level, stamp, one_per_product)


__all__ = ["LexicalSearchMixin"]
