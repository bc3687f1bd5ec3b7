"""Per-record work shared by every index engine: one product image -> pixels (or a `Failure`), and title vectors
for a batch of products.

Entry points: `prepare_product(product, fetcher, preprocess) -> Ready | Failure` and `TitleVectors(encoder)`.
`prepare_image` is the same work in tuple form. The local engine (`indexer.job.IndexJob`) runs them on threads;
the Ray engine runs them in Ray workers, so both engines fail the same records for the same reasons (and stages)
and store the same vectors. Both sit inside the fault boundary (`indexer.boundary`): they raise only for
run-level errors (`boundary.FATAL_ERRORS`).

Title vectors (for hybrid search): each product's title is embedded by the title encoder (`encode_documents`:
the image-text encoder's own text tower, or a separate model such as EmbeddingGemma); an untitled product uses
its main category instead. A product with neither (e.g. the bootcamp subset, which has no metadata), or a title
the tokenizer reduces to nothing, reuses its image vector when titles share the image space (hybrid search then
degrades to image similarity for that product), else gets the title encoder's vector of an empty title; a zero
vector would be undefined under COSINE. The model reads the title with its whitespace normalised and made valid
(`sanitize.model_text`); the store keeps it verbatim.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from mmsearch.errors import InvalidTextError
from mmsearch.indexer.boundary import FATAL_ERRORS, Failure, run_isolated
from mmsearch.models.base import SameSpaceTitles, TitleEncoder
from mmsearch.sanitize import model_text, redact_url
from mmsearch.types import Product

log = logging.getLogger(__name__)

P = TypeVar("P")
TEXT_CACHE_SIZE = 4096  # a product's images are consecutive and share one title: embed it once


@dataclass(frozen=True)
class Ready:
    """A product whose image is fetched, decoded and preprocessed: `pixels` is (3, S, S) float32."""

    product: Product
    pixels: Any


def failure_where(product: Product) -> str:
    """How a product's image is named in a failure entry: its URL (redacted) or path; bytes by their size."""
    ref = product.image_url or product.image
    if isinstance(ref, bytes | bytearray | memoryview):
        return f"<{len(ref)} bytes>"
    return redact_url(str(ref))


def prepare_product(
    product: Product, fetcher: Any, preprocess: Callable[[list[Any]], Any]
) -> Ready | Failure:
    """Resolve, fetch, decode and preprocess one product's image; a bad record is a `Failure`, never an exception.

    Args:
        product: the record (its `image` is a URL, a local path or bytes).
        fetcher: an `ImageFetcher` (`resolve`: scheme check and path confinement; `fetch_bytes`; `decode`).
        preprocess: the encoder's `preprocess([image]) -> (1, 3, S, S)`.
    """
    where = failure_where(product)
    stage = "resolve"
    try:
        ref = fetcher.resolve(product.image)
        stage = "fetch"
        data = fetcher.fetch_bytes(ref)
        stage = "decode"
        image = fetcher.decode(data, product.image if isinstance(product.image, str) else ref)
        stage = "preprocess"
        pixels = preprocess([image])[0]
    except FATAL_ERRORS:
        raise
    except Exception as e:  # the boundary: whatever one record does, it fails alone
        return Failure.of(stage, product.id, where, e)
    return Ready(product, pixels)


def prepare_image(
    fetcher: Any, preprocess: Callable[[list[Any]], Any], product: Product
) -> tuple[Product, Any | None, str | None]:
    """`prepare_product` as (product, pixels (1, 3, S, S) or None, "stage: reason" or None)."""
    item = prepare_product(product, fetcher, preprocess)
    if isinstance(item, Failure):
        return product, None, f"{item.stage}: {item.reason}"
    return product, item.pixels.unsqueeze(0), None


class TitleVectors:
    """(n, dim) title vectors for products, with an LRU cache of embedded titles (see the module docstring).

    A title on which the encoder raises (other than "no tokens", which falls back to the image vector) is
    isolated by splitting the batch; the call reports it in `errors[i]` so the caller fails that record alone.
    """

    def __init__(self, encoder: Any, cache_size: int = TEXT_CACHE_SIZE):
        # A `TitleEncoder`, or an image-text encoder whose own text tower embeds the titles.
        self.titles = encoder if isinstance(encoder, TitleEncoder) else SameSpaceTitles(encoder)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray | None] = OrderedDict()
        self._empty: np.ndarray | None = None

    def __call__(
        self,
        products: Sequence[Product],
        image_vectors: np.ndarray,
        errors: dict[int, Exception] | None = None,
    ) -> np.ndarray:
        texts = [model_text(p.title) or model_text(p.main_category) for p in products]
        missing = list(dict.fromkeys(t for t in texts if t and t not in self._cache))
        failed = self._embed(missing) if missing else {}
        out = np.empty((len(products), self.titles.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            vec = self._cache.get(text) if text else None
            out[i] = self._untitled(image_vectors[i]) if vec is None else vec
            if text in failed and errors is not None:
                errors[i] = failed[text]
            if text in self._cache:
                self._cache.move_to_end(text)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def _untitled(self, image_vector: np.ndarray) -> np.ndarray:
        if self.titles.same_space_as_images:
            return image_vector
        if self._empty is None:
            self._empty = np.asarray(self.titles.encode_documents([""])[0], dtype=np.float32)
        return self._empty

    def _embed(self, texts: list[str]) -> dict[str, Exception]:
        """Cache the vectors of `texts`; returns the texts the encoder raised on (other than "no tokens")."""
        done, failed = run_isolated(lambda chunk: list(self.titles.encode_documents(chunk)), texts)
        for chunk, vectors in done:
            for text, vec in zip(chunk, vectors, strict=True):
                self._cache[text] = np.asarray(vec, dtype=np.float32)
        errors: dict[str, Exception] = {}
        for text, err in failed:
            if isinstance(err, InvalidTextError):
                log.info("title vector falls back (image vector or empty title): %s", err)
                self._cache[text] = None
            else:
                errors[text] = err
        return errors


__all__ = ["TEXT_CACHE_SIZE", "Ready", "TitleVectors", "failure_where", "prepare_image", "prepare_product"]
