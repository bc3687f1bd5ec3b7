"""Map one Amazon Reviews 2023 metadata record to `Product`s: deterministic ids, lenient number parsing, bounded meta.

Entry point: `products_from_record(record, where=..., base_dir=..., roots=...)`, used by every record source
(jsonl, parquet, the hub): one `Product` per usable image, or a `Failure` for an image entry that cannot be used.
Ids are `"<parent_asin>:<i>"`, `i` being the image's position in the record's `images` list, so they are stable
as long as the source keeps its image order.

Strings are stored as given but made valid (`sanitize.valid_text`: lone surrogates -> U+FFFD, NUL removed);
whitespace is only normalised later, for the model's input. Numbers are parsed leniently: NaN, infinities,
negative prices and numbers too large for a float become "unknown". `meta` is made JSON-safe the same way.
Local image paths resolve against the catalogue's folder and, when `roots` is given, must stay under one of those
folders after following symlinks (`media.decode.confine`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmsearch.errors import InvalidImageError
from mmsearch.indexer.boundary import Failure
from mmsearch.media.decode import confine
from mmsearch.media.fetch import is_url, url_scheme
from mmsearch.sanitize import redact_url, valid_text
from mmsearch.types import Product

MAX_ID_LENGTH = 512  # bytes; the store's VARCHAR primary key limit
MAX_META_BYTES = 8192
# Preference among the sizes of one Amazon image: `large` (~500 px) is plenty for a 224-px encoder.
IMAGE_KEYS = ("large", "hi_res", "thumb")
_MAPPED_KEYS = frozenset(
    {"parent_asin", "title", "main_category", "price", "average_rating", "rating_number", "images"}
)
_INT64 = 2**63 - 1
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
    try:
        if isinstance(value, int | float):
            number = float(value)
        elif isinstance(value, str):
            m = _PRICE_RE.search(value[:200])
            if not m:
                return None
            number = float(m.group(0).replace(",", ""))
        else:
            return None
    except OverflowError:  # an integer beyond float range
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _parse_float(value: Any, lo: float, hi: float) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value[:100].replace(",", "")) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return x if math.isfinite(x) and lo <= x <= hi else None


def _parse_count(value: Any) -> int | None:
    x = _parse_float(value, 0, 1e15)
    return int(x) if x is not None else None


def _text(value: Any) -> str:
    """The value as given, made valid text; non-strings (a number as a title) by their str()."""
    if value is None:
        return ""
    return valid_text(value if isinstance(value, str) else str(value))


def _json_safe(value: Any) -> Any:
    """A copy that Milvus' JSON field accepts: valid strings, finite floats, int64 ints, str() for the rest."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, int):
        return value if -_INT64 - 1 <= value <= _INT64 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {valid_text(str(k)): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return valid_text(str(value))


def _bounded_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy of `meta` under MAX_META_BYTES: the largest fields go first, named in `_dropped`."""
    safe = _json_safe(meta)
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


def _resolve(ref: str, base_dir: Path | None, roots: list[Path] | None) -> str | None:
    """A URL as is; a local path made absolute (against `base_dir`) and confined to `roots` when given.

    Returns None for a relative path without a base folder. Raises `InvalidImageError` (or `ValueError` for a
    path the OS cannot represent, e.g. with a NUL) for a path that may not be read.
    """
    scheme = url_scheme(ref)
    if is_url(ref) or (scheme is not None and scheme != "file"):
        return ref  # other schemes (data:, ftp:) are refused by the fetcher, with the stage "resolve"
    path = ref[len("file://") :] if ref.startswith("file://") else ref
    if "\x00" in path:
        raise InvalidImageError(f"{redact_url(ref)}: path contains a NUL character")
    p = Path(path)
    if not p.is_absolute():
        if base_dir is None:
            return None
        p = base_dir / p
    if roots is not None:
        return str(confine(p, roots))
    return str(p.resolve())


def _without_userinfo(ref: str) -> str:
    if not is_url(ref):
        return ref
    scheme, _, rest = ref.partition("://")
    netloc, sep, tail = rest.partition("/")
    return f"{scheme}://{netloc.rpartition('@')[2]}{sep}{tail}"


def products_from_record(
    record: Any,
    *,
    where: str,
    base_dir: Path | None,
    max_images: int | None = None,
    roots: list[Path] | None = None,
) -> list[Product | Failure]:
    """Map one metadata record to one `Product` per usable image, and a `Failure` per unusable image entry.

    Args:
        record: the parsed JSON object (or parquet row).
        where: `file:line`, for failure entries.
        base_dir: the folder relative image paths resolve against (None: relative paths are refused).
        max_images: keep at most this many images of the record.
        roots: folders local images must resolve under (None: no confinement).

    Raises:
        RecordError: the record as a whole is unusable (not an object, no parent_asin, no images).
    """
    if not isinstance(record, dict):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    raw_asin = record.get("parent_asin")
    if raw_asin is None or not str(raw_asin).strip():
        raise RecordError("missing parent_asin")
    if isinstance(raw_asin, bool) or not isinstance(raw_asin, str | int):
        raise RecordError(f"parent_asin must be a string, got {type(raw_asin).__name__}")
    asin = valid_text(str(raw_asin).strip())
    if not asin:
        raise RecordError("parent_asin has no valid characters")
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
    out: list[Product | Failure] = []
    kept = 0
    for index, entry in entries:
        if max_images is not None and kept >= max_images:
            break
        pid = make_id(asin, str(index))
        ref, variant = _pick_ref(entry)
        if ref is None:
            reason = f"image {index} of {asin!r} has no usable reference ({', '.join(IMAGE_KEYS)})"
            out.append(Failure.of("validate", pid, where, reason))
            continue
        try:
            resolved = _resolve(ref, base_dir, roots)
        except (InvalidImageError, ValueError, OSError) as e:
            out.append(Failure.of("resolve", pid, where, e))
            continue
        if resolved is None:
            reason = f"image {index} of {asin!r}: {redact_url(ref)!r} is neither a URL nor an absolute path"
            out.append(Failure.of("resolve", pid, where, reason))
            continue
        meta = _bounded_meta({**base_meta, "image_index": index, "image_variant": variant})
        shown = _without_userinfo(resolved)  # stored and shown to API users: never a password
        out.append(Product(id=pid, image=resolved, image_url=shown, meta=meta, **common))
        kept += 1
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
