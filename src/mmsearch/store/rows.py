"""Row mapping and input checks: a `Product` becomes a Milvus row, a Milvus row becomes a `Hit`, in one place each.

Entry points: `product_to_row(product)`, `row_to_hit(row, score)`, and the checks every store verb runs on its
inputs (`as_matrix`, `one_query`, `as_queries`, `check_k`), each naming the argument and what it expected.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from mmsearch.errors import InvalidQueryError
from mmsearch.limits import MAX_K
from mmsearch.sanitize import valid_text
from mmsearch.store.schema import ID, ID_MAX_BYTES, MISSING, VARCHAR_MAX_BYTES
from mmsearch.types import Hit, Product


def _truncate_utf8(text: str, max_bytes: int) -> str:
    # valid_text: a lone surrogate would make the UTF-8 encoding (ours and pymilvus') raise.
    return valid_text(text, max_bytes)


def _number(value: float | int | None, *, integer: bool = False) -> float | int:
    if value is None:
        return MISSING
    number = int(value) if integer else float(value)
    return number if math.isfinite(number) and number >= 0 else MISSING


def _known(value: Any) -> Any:
    return None if value is None or value < 0 else value


def product_to_row(product: Product) -> dict[str, Any]:
    """The Milvus row (without vectors) for one product. Unknown numbers become the MISSING sentinel."""
    if not isinstance(product.id, str) or not product.id:
        raise ValueError(f"product id must be a non-empty string, got {product.id!r}")
    if len(product.id.encode("utf-8")) > ID_MAX_BYTES:
        raise ValueError(f"product id {product.id[:60]!r}... is longer than {ID_MAX_BYTES} UTF-8 bytes")
    try:
        json.dumps(product.meta)
    except (TypeError, ValueError) as err:
        raise ValueError(f"product {product.id!r}: meta is not JSON-serialisable ({err})") from None
    row: dict[str, Any] = {ID: product.id}
    for name, limit in VARCHAR_MAX_BYTES.items():
        row[name] = _truncate_utf8(getattr(product, name) or "", limit)
    row["price"] = _number(product.price)
    row["average_rating"] = _number(product.average_rating)
    row["rating_number"] = _number(product.rating_number, integer=True)
    row["meta"] = dict(product.meta)
    return row


def row_to_hit(row: dict[str, Any], score: float) -> Hit:
    """The single place a Milvus row becomes a `Hit`; the MISSING sentinel maps back to None."""
    entity = row.get("entity", row)
    rating_number = _known(entity.get("rating_number"))
    return Hit(
        id=str(row.get(ID, entity.get(ID))),
        score=float(score),
        title=entity.get("title") or "",
        main_category=entity.get("main_category") or "",
        price=_known(entity.get("price")),
        average_rating=_known(entity.get("average_rating")),
        rating_number=None if rating_number is None else int(rating_number),
        parent_asin=entity.get("parent_asin") or "",
        image_url=entity.get("image_url") or "",
        meta=dict(entity.get("meta") or {}),
    )


def as_matrix(name: str, value: Any, rows: int, dim: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim != 2 or arr.shape != (rows, dim):
        raise ValueError(f"{name} must have shape ({rows}, {dim}), got {tuple(arr.shape)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def one_query(name: str, value: Any, dim: int) -> np.ndarray:
    """One query vector, (dim,) or (1, dim), as a (1, dim) batch."""
    arr = np.asarray(value, dtype=np.float32)
    if arr.shape not in ((dim,), (1, dim)):
        raise InvalidQueryError(f"{name} must have shape ({dim},), got {tuple(np.shape(value))}")
    return arr.reshape(1, dim)


def as_queries(name: str, value: Any, dim: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise InvalidQueryError(f"{name} must have shape (nq, {dim}), got {tuple(np.shape(value))}")
    if not np.isfinite(arr).all():
        raise InvalidQueryError(f"{name} contains NaN or infinite values")
    return arr


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= MAX_K:
        raise InvalidQueryError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
    return int(k)


__all__ = ["as_matrix", "as_queries", "check_k", "one_query", "product_to_row", "row_to_hit"]
