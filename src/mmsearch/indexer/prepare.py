"""Per-record work shared by every index engine: one product image -> pixels (or a failure reason), and
title vectors for a batch of products.

Entry points: `prepare_image(fetcher, preprocess, product)` and `TitleVectors(encoder)`. The local engine
(`indexer.job.IndexJob`) runs them on threads; the Ray engine (`pipelines.ray_stages`) runs them in Ray
workers, so both engines fail the same records for the same reasons and store the same vectors.

Title vectors (for hybrid search): each product's title is embedded with `encode_texts`; an untitled product
uses its main category instead; a product with neither (e.g. the bootcamp subset, which has no metadata)
reuses its image vector, as does a title the tokenizer reduces to nothing. Visualized BGE puts text and
images in one space, so hybrid search stays meaningful (it degrades to image similarity for that product);
a zero vector would be undefined under COSINE.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from mmsearch.errors import InvalidImageError, InvalidTextError
from mmsearch.types import Product

log = logging.getLogger(__name__)

P = TypeVar("P")
TEXT_CACHE_SIZE = 4096  # a product's images are consecutive and share one title: embed it once


def failure_where(product: Product) -> str:
    """Where a product's image failure is logged: its URL or path (bytes are cut to a short repr)."""
    return product.image_url or str(product.image)[:200]


def prepare_image(
    fetcher: Any, preprocess: Callable[[list[Any]], P], product: Product
) -> tuple[Product, P | None, str | None]:
    """Fetch, decode and preprocess one product image inside a fault boundary.

    Returns (product, preprocess([image]) or None, failure reason or None): a bad image or an unexpected
    decoder error is one failed record, never an exception.
    """
    try:
        img = fetcher.open(product.image)
        return product, preprocess([img]), None
    except InvalidImageError as e:
        return product, None, str(e)
    except Exception as e:  # an unexpected decoder/preprocess failure is one bad item, not a dead job
        return product, None, f"{product.image_url or 'image'}: {type(e).__name__}: {e}"


class TitleVectors:
    """(n, dim) title vectors for products, with an LRU cache of embedded titles (see the module docstring)."""

    def __init__(self, encoder: Any, cache_size: int = TEXT_CACHE_SIZE):
        self.encoder = encoder
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray | None] = OrderedDict()

    def __call__(self, products: Sequence[Product], image_vectors: np.ndarray) -> np.ndarray:
        texts = [p.title.strip() or p.main_category.strip() for p in products]
        missing = list(dict.fromkeys(t for t in texts if t and t not in self._cache))
        if missing:
            self._embed(missing)
        out = np.empty_like(image_vectors)
        for i, text in enumerate(texts):
            vec = self._cache.get(text) if text else None
            out[i] = image_vectors[i] if vec is None else vec
            if text:
                self._cache.move_to_end(text)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def _embed(self, texts: list[str]) -> None:
        """Cache the vectors of `texts`; a text the encoder refuses (no tokens) caches None (image fallback)."""
        try:
            vectors: list[np.ndarray | None] = list(self.encoder.encode_texts(texts))
        except InvalidTextError:
            # One unusable title must not sink the batch: embed one by one and skip the refused ones.
            vectors = []
            for text in texts:
                try:
                    vectors.append(self.encoder.encode_texts([text])[0])
                except InvalidTextError as e:
                    log.info("title vector falls back to the image vector: %s", e)
                    vectors.append(None)
        for text, vec in zip(texts, vectors, strict=True):
            self._cache[text] = None if vec is None else np.asarray(vec, dtype=np.float32)


__all__ = ["TEXT_CACHE_SIZE", "TitleVectors", "failure_where", "prepare_image"]
