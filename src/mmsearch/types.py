"""Typed records that cross stage boundaries: a `Product` going into the index and a `Hit` coming out of search."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Product:
    """One product image to index, in the Amazon Reviews 2023 metadata schema (one record per image).

    `id` is deterministic from the source (parent_asin + image index, or a hash of the image reference),
    so re-indexing is an idempotent upsert. `image` is a URL, a local path, or raw bytes.
    """

    id: str
    image: str | bytes
    title: str = ""
    main_category: str = ""
    price: float | None = None
    average_rating: float | None = None
    rating_number: int | None = None
    parent_asin: str = ""
    image_url: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    """One search result. Built from a Milvus row in exactly one place (`mmsearch.store`)."""

    id: str
    score: float
    title: str = ""
    main_category: str = ""
    price: float | None = None
    average_rating: float | None = None
    rating_number: int | None = None
    parent_asin: str = ""
    image_url: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


__all__ = ["Hit", "Product"]
