"""Map one Amazon Reviews 2023 metadata record to `Product`s: deterministic ids, lenient number parsing, bounded meta.

Entry point: `products_from_record(record, where=..., base_dir=..., on_error=...)`, used by every record source
(jsonl, parquet, the hub). Ids are `"<parent_asin>:<i>"`, `i` being the image's position in the record's
`images` list, so they are stable as long as the source keeps its image order.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmsearch.media.fetch import is_url
from mmsearch.types import Product

MAX_ID_LENGTH = 512  # bytes; the store's VARCHAR primary key limit
MAX_META_BYTES = 8192
# Preference among the sizes of one Amazon image: `large` (~500 px) is plenty for a 224-px encoder.
IMAGE_KEYS = ("large", "hi_res", "thumb")
_MAPPED_KEYS = frozenset(
    {"parent_asin", "title", "main_category", "price", "average_rating", "rating_number", "images"}
)
_PRICE_RE = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")

# on_error(id, where, reason): called for a bad record or image entry instead of raising.
ErrorHandler = Callable[[str, str, str], None]


def make_id(prefix: str, key: str) -> str:
    """`prefix:key`, or `prefix:sha1:<hex>` when that would exceed `MAX_ID_LENGTH` bytes."""
    out = f"{prefix}:{key}"
    if len(out.encode("utf-8")) <= MAX_ID_LENGTH:
        return out
    return f"{prefix[:400]}:sha1:{hashlib.sha1(key.encode('utf-8')).hexdigest()}"


# -- lenient field parsing -------------------------------------------------------------------------------------


def parse_price(value: Any) -> float | None:
    """`12.99`, `"$12.99"`, `"1,299.00"`, `"from $5 - $9"` (first number) -> float; `None`/`"None"`/`"—"` -> None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) and value >= 0 else None
    if isinstance(value, str):
        m = _PRICE_RE.search(value)
        return float(m.group(0).replace(",", "")) if m else None
    return None


def _parse_float(value: Any, lo: float, hi: float) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(str(value).replace(",", "")) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and lo <= x <= hi else None


def _parse_count(value: Any) -> int | None:
    x = _parse_float(value, 0, 1e15)
    return int(x) if x is not None else None


def _text(value: Any) -> str:
    if value is None:
        return ""
    return " ".join(str(value).split())


def _bounded_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy of `meta` under MAX_META_BYTES: the largest fields go first, named in `_dropped`."""
    safe = json.loads(json.dumps(meta, default=str, ensure_ascii=False))
    sizes = {k: len(json.dumps(v, ensure_ascii=False)) for k, v in safe.items()}
    dropped: list[str] = []
    while safe and len(json.dumps(safe, ensure_ascii=False).encode("utf-8")) > MAX_META_BYTES:
        biggest = max(safe, key=lambda k: sizes.get(k, 0))
        safe.pop(biggest)
        dropped.append(biggest)
        safe["_dropped"] = dropped
        sizes["_dropped"] = 0
    return safe


# -- metadata records (jsonl, parquet, hub) --------------------------------------------------------------------


class RecordError(ValueError):
    """One record cannot be used; the message is the reason (the caller adds where)."""


def _image_entries(value: Any) -> list[tuple[int, Any]]:
    """Normalise `images` to [(index, entry)]: a list of dicts or strings, or HF's dict-of-lists column form."""
    if value is None:
        return []
    if isinstance(value, dict):
        columns = {k: v for k, v in value.items() if isinstance(v, list)}
        n = max((len(v) for v in columns.values()), default=0)
        value = [{k: (v[i] if i < len(v) else None) for k, v in columns.items()} for i in range(n)]
    if not isinstance(value, list):
        raise RecordError(f"images must be a list, got {type(value).__name__}")
    return list(enumerate(value))


def _pick_ref(entry: Any) -> tuple[str | None, str]:
    """(reference, variant) of one image entry; reference None when the entry has no usable string."""
    if isinstance(entry, str):
        return (entry.strip() or None), ""
    if isinstance(entry, dict):
        variant = _text(entry.get("variant"))
        for key in IMAGE_KEYS:
            ref = entry.get(key)
            if isinstance(ref, str) and ref.strip() and ref.strip().lower() not in ("none", "null"):
                return ref.strip(), variant
        return None, variant
    return None, ""


def _resolve(ref: str, base_dir: Path | None) -> str | None:
    if is_url(ref):
        return ref
    path = ref[len("file://") :] if ref.startswith("file://") else ref
    p = Path(path).expanduser()
    if not p.is_absolute():
        if base_dir is None:
            return None
        p = base_dir / p
    return str(p.resolve())


def products_from_record(
    record: Any,
    *,
    where: str,
    base_dir: Path | None,
    on_error: ErrorHandler,
    max_images: int | None = None,
) -> list[Product]:
    """Map one metadata record to one `Product` per usable image. Raises `RecordError` for an unusable record."""
    if not isinstance(record, dict):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    raw_asin = record.get("parent_asin")
    if raw_asin is None or not str(raw_asin).strip():
        raise RecordError("missing parent_asin")
    if not isinstance(raw_asin, str | int):
        raise RecordError(f"parent_asin must be a string, got {type(raw_asin).__name__}")
    asin = str(raw_asin).strip()
    entries = _image_entries(record.get("images"))
    if not entries:
        raise RecordError(f"product {asin!r} has no images")

    price = parse_price(record.get("price"))
    base_meta = {k: v for k, v in record.items() if k not in _MAPPED_KEYS}
    raw_price = record.get("price")
    if price is None and isinstance(raw_price, str) and raw_price.strip().lower() not in ("", "none", "null"):
        base_meta["price_raw"] = raw_price
    common = {
        "title": _text(record.get("title")),
        "main_category": _text(record.get("main_category")),
        "price": price,
        "average_rating": _parse_float(record.get("average_rating"), 0.0, 5.0),
        "rating_number": _parse_count(record.get("rating_number")),
        "parent_asin": asin,
    }
    out = []
    for index, entry in entries:
        if max_images is not None and len(out) >= max_images:
            break
        pid = make_id(asin, str(index))
        ref, variant = _pick_ref(entry)
        if ref is None:
            on_error(
                pid, where, f"image {index} of {asin!r} has no usable reference ({', '.join(IMAGE_KEYS)})"
            )
            continue
        resolved = _resolve(ref, base_dir)
        if resolved is None:
            on_error(pid, where, f"image {index} of {asin!r}: {ref!r} is neither a URL nor an absolute path")
            continue
        meta = _bounded_meta({**base_meta, "image_index": index, "image_variant": variant})
        out.append(Product(id=pid, image=resolved, image_url=resolved, meta=meta, **common))
    return out


__all__ = [
    "IMAGE_KEYS",
    "MAX_ID_LENGTH",
    "MAX_META_BYTES",
    "ErrorHandler",
    "RecordError",
    "make_id",
    "parse_price",
    "products_from_record",
]
