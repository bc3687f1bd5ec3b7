"""One slot per product: results keep the best-scoring image of each product (`product_key`).

Milvus groups in the engine with `group_by_field` where it can (Milvus Lite 3.x; servers >= 2.4 for search and
>= 2.5 for hybrid search, on collections that have the `product_key` field). Elsewhere the store over-fetches and
dedupes here, widening the fetch until k products come back or the collection runs out.
Entry points: `product_key`, `one_per_product`, `fetch_distinct`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mmsearch.types import Hit, Product

# First over-fetch factor, growth per retry, and the widest fetch (Milvus' topk limit is 16384).
OVERFETCH_FACTOR = 4
OVERFETCH_GROWTH = 4
MAX_FETCH = 16384


def product_key(item: Product | Hit) -> str:
    """The product an image belongs to: its parent_asin, or its own id when it has none (an image folder)."""
    return item.parent_asin or item.id


def one_per_product(hits: Sequence[Hit], k: int) -> list[Hit]:
    """The first (best) hit of each product, in order, at most k."""
    seen: set[str] = set()
    out: list[Hit] = []
    for hit in hits:
        key = product_key(hit)
        if key in seen:
            continue
        seen.add(key)
        out.append(hit)
        if len(out) == k:
            break
    return out


def fetch_distinct(run: Callable[[int], list[list[Hit]]], k: int) -> list[list[Hit]]:
    """Dedupe `run(limit)` (one hit list per query) to k products per query, widening `limit` while some query
    came back full (so more rows exist) yet short of k products."""
    limit = min(k * OVERFETCH_FACTOR, MAX_FETCH)
    while True:
        results = run(limit)
        deduped = [one_per_product(hits, k) for hits in results]
        short = any(len(d) < k and len(r) >= limit for d, r in zip(deduped, results, strict=True))
        if not short or limit >= MAX_FETCH:
            return deduped
        limit = min(limit * OVERFETCH_GROWTH, MAX_FETCH)


class GroupingMixin:
    """How `ProductStore` searches give one slot per product (uses its stamp and server version)."""

    def _group_by(self, stamp, *, hybrid: bool) -> bool:
        """Whether Milvus groups by product itself: `group_by_field` came in 2.4 (search), 2.5 (hybrid search).

        A fused score counts a route only where the candidate is in that route's fetched top, so grouped (or
        over-fetched) hybrid results, which fetch each route deeper, score higher than ungrouped ones at the same
        k (0.686 against 0.528 in tests/test_store_products.py); plain search scores are unchanged.
        """
        return stamp.product_key and self._server_at_least((2, 5) if hybrid else (2, 4))

    def _distinct(
        self, run: Callable[..., list[list[Hit]]], k: int, stamp, *, hybrid: bool
    ) -> list[list[Hit]]:
        """k products per query from `run(limit, group=...)`: grouped by Milvus where it can, else `fetch_distinct`."""
        if self._group_by(stamp, hybrid=hybrid):
            return [one_per_product(hits, k) for hits in run(k, group=True)]
        return fetch_distinct(run, k)


__all__ = [
    "MAX_FETCH",
    "GroupingMixin",
    "OVERFETCH_FACTOR",
    "fetch_distinct",
    "one_per_product",
    "product_key",
]
